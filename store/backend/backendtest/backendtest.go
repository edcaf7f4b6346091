// Package backendtest is the conformance suite every store backend runs: the
// store relies on exactly the guarantees these tests check, whatever the
// backend (local directory, remote server, object storage).
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/store/backend"
)

// NewFunc returns a new, empty backend for one test.
type NewFunc func(t testing.TB) backend.Backend

// Run runs the conformance suite against backends made by newBackend.
func Run(t *testing.T, newBackend NewFunc) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b backend.Backend)
	}{
		{"PutGet", testPutGet},
		{"PutIfAbsentRefusesExisting", testPutIfAbsent},
		{"ConcurrentPutOneWins", testConcurrentPut},
		{"GetRange", testGetRange},
		{"NotFound", testNotFound},
		{"StatSize", testStat},
		{"ListPrefixOrdered", testList},
		{"Delete", testDelete},
		{"InvalidNames", testInvalidNames},
		{"InvalidPrefixes", testInvalidPrefixes},
		{"HostileRanges", testHostileRanges},
		{"EmptyAndLargeObjects", testSizes},
		{"ReadWholeBounded", testReadWhole},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			defer b.Close()
			tc.fn(t, b)
		})
	}
}

var ctx = context.Background()

func put(t *testing.T, b backend.Backend, name string, data []byte) {
	t.Helper()
	if err := b.PutIfAbsent(ctx, name, data); err != nil {
		t.Fatalf("put %s: %v", name, err)
	}
}

func get(t *testing.T, b backend.Backend, name string, off, n int64) []byte {
	t.Helper()
	data, err := b.Get(ctx, name, off, n)
	if err != nil {
		t.Fatalf("get %s [%d,%d): %v", name, off, n, err)
	}
	return data
}

func testPutGet(t *testing.T, b backend.Backend) {
	data := []byte("hello, store")
	put(t, b, "packs/ab/abcdef", data)
	if got := get(t, b, "packs/ab/abcdef", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("get = %q, want %q", got, data)
	}
}

func testPutIfAbsent(t *testing.T, b backend.Backend) {
	put(t, b, "nodes/a/manifests/1", []byte("first"))
	err := b.PutIfAbsent(ctx, "nodes/a/manifests/1", []byte("second"))
	if !errors.Is(err, backend.ErrExists) {
		t.Fatalf("second put: err = %v, want ErrExists", err)
	}
	if got := get(t, b, "nodes/a/manifests/1", 0, -1); string(got) != "first" {
		t.Fatalf("object changed by refused put: %q", got)
	}
}

func testConcurrentPut(t *testing.T, b backend.Backend) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = b.PutIfAbsent(ctx, "race/obj", []byte(fmt.Sprintf("writer-%d", i)))
		}(i)
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both succeeded", winner, i)
			}
			winner = i
		case !errors.Is(err, backend.ErrExists):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	if got := get(t, b, "race/obj", 0, -1); string(got) != fmt.Sprintf("writer-%d", winner) {
		t.Fatalf("stored %q, winner was %d", got, winner)
	}
}

func testGetRange(t *testing.T, b backend.Backend) {
	data := make([]byte, 10000)
	rand.New(rand.NewSource(1)).Read(data)
	put(t, b, "r", data)
	for _, r := range []struct{ off, n int64 }{{0, 1}, {0, 10000}, {9999, 1}, {1234, 5000}, {10000, 0}, {500, -1}} {
		want := data[r.off:]
		if r.n >= 0 {
			want = data[r.off : r.off+r.n]
		}
		if got := get(t, b, "r", r.off, r.n); !bytes.Equal(got, want) {
			t.Fatalf("range %d+%d: got %d bytes, want %d", r.off, r.n, len(got), len(want))
		}
	}
	if _, err := b.Get(ctx, "r", 9000, 2000); err == nil {
		t.Fatal("range past the end: want error")
	}
}

func testNotFound(t *testing.T, b backend.Backend) {
	if _, err := b.Get(ctx, "missing/x", 0, -1); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("get missing: %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(ctx, "missing/x"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat missing: %v, want ErrNotFound", err)
	}
}

func testStat(t *testing.T, b backend.Backend) {
	put(t, b, "s/one", make([]byte, 777))
	in, err := b.Stat(ctx, "s/one")
	if err != nil {
		t.Fatal(err)
	}
	if in.Size != 777 || in.Name != "s/one" || in.ModTime.IsZero() {
		t.Fatalf("stat = %+v", in)
	}
}

func testList(t *testing.T, b backend.Backend) {
	names := []string{"index/ff/ff01", "index/00/0001", "index/0a/0a02", "indexes-not", "packs/00/0003", "index/00/0000"}
	for _, n := range names {
		put(t, b, n, []byte(n))
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"index/", []string{"index/00/0000", "index/00/0001", "index/0a/0a02", "index/ff/ff01"}},
		{"index/0", []string{"index/00/0000", "index/00/0001", "index/0a/0a02"}},
		{"index", []string{"index/00/0000", "index/00/0001", "index/0a/0a02", "index/ff/ff01", "indexes-not"}},
		{"nothing/", nil},
		{"", []string{"index/00/0000", "index/00/0001", "index/0a/0a02", "index/ff/ff01", "indexes-not", "packs/00/0003"}},
	} {
		var got []string
		if err := b.List(ctx, tc.prefix, func(in backend.Info) error {
			if in.Size != int64(len(in.Name)) {
				t.Errorf("list %s: size %d, want %d", in.Name, in.Size, len(in.Name))
			}
			got = append(got, in.Name)
			return nil
		}); err != nil {
			t.Fatalf("list %q: %v", tc.prefix, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("list %q = %v, want %v", tc.prefix, got, tc.want)
		}
	}
	stop := errors.New("stop")
	if err := b.List(ctx, "index/", func(backend.Info) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("list: callback error not returned: %v", err)
	}
}

func testDelete(t *testing.T, b backend.Backend) {
	put(t, b, "d/x", []byte("x"))
	if err := b.Delete(ctx, "d/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "d/x"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := b.Delete(ctx, "d/x"); err != nil {
		t.Fatalf("delete of missing object: %v", err)
	}
	put(t, b, "d/x", []byte("again"))
	if got := get(t, b, "d/x", 0, -1); string(got) != "again" {
		t.Fatalf("put after delete: %q", got)
	}
}

func testInvalidNames(t *testing.T, b backend.Backend) {
	for _, name := range []string{"", "/abs", "a//b", "../x", "a/../b", "a/.hidden", "trailing/", "sp ace", "nul\x00"} {
		if err := b.PutIfAbsent(ctx, name, []byte("x")); err == nil {
			t.Errorf("put %q: accepted an invalid name", name)
		}
		if _, err := b.Get(ctx, name, 0, -1); err == nil {
			t.Errorf("get %q: accepted an invalid name", name)
		}
	}
}

func testInvalidPrefixes(t *testing.T, b backend.Backend) {
	put(t, b, "nodes/a/manifests/1", []byte("x"))
	for _, prefix := range []string{"/", "/etc/", "nodes/a/../../../../usr/", "../", "..", "nodes//", "nodes/a/./", "nodes\\a", "nul\x00/", "nodes/a/.hid", strings.Repeat("a/", 300)} {
		called := false
		err := b.List(ctx, prefix, func(backend.Info) error { called = true; return nil })
		if err == nil || called {
			t.Errorf("list %q: accepted an invalid prefix (err %v, listed something: %v)", prefix, err, called)
		}
	}
}

// testHostileRanges: offsets and lengths whose sum overflows an int64, or
// that are negative, fail with an error (never a panic, never a huge
// allocation).
func testHostileRanges(t *testing.T, b backend.Backend) {
	put(t, b, "h", []byte("0123456789"))
	for _, r := range []struct{ off, n int64 }{
		{1, math.MaxInt64}, {math.MaxInt64, 1}, {math.MaxInt64, math.MaxInt64}, {-1, 1}, {math.MinInt64, 2}, {11, -1}, {10, 1}, {0, 11},
	} {
		if data, err := b.Get(ctx, "h", r.off, r.n); err == nil {
			t.Errorf("get [%d,+%d) of a 10-byte object: got %d bytes and no error", r.off, r.n, len(data))
		} else if !errors.Is(err, backend.ErrRange) {
			t.Errorf("get [%d,+%d) of a 10-byte object: %v, want an error wrapping backend.ErrRange", r.off, r.n, err)
		}
	}
	if got := get(t, b, "h", 9, 1); string(got) != "9" {
		t.Fatalf("get [9,+1) = %q", got)
	}
}

func testSizes(t *testing.T, b backend.Backend) {
	put(t, b, "empty", nil)
	if got := get(t, b, "empty", 0, -1); len(got) != 0 {
		t.Fatalf("empty object: %d bytes", len(got))
	}
	big := make([]byte, 9<<20)
	rand.New(rand.NewSource(2)).Read(big)
	put(t, b, "big", big)
	if got := get(t, b, "big", 0, -1); !bytes.Equal(got, big) {
		t.Fatal("large object differs")
	}
}

// testReadWhole: a whole read returns the object when it is within its
// bound and refuses it, wrapping ErrTooLarge, when it is over, whether the
// backend bounds the read itself or through Stat.
func testReadWhole(t *testing.T, b backend.Backend) {
	data := make([]byte, 3<<20) // several frames or reads
	rand.New(rand.NewSource(4)).Read(data)
	put(t, b, "w/obj", data)
	put(t, b, "w/empty", nil)
	for _, be := range []backend.Backend{b, statOnly{b}} {
		for _, max := range []int64{int64(len(data)), int64(len(data)) + 1, 1 << 30} {
			got, err := backend.ReadWhole(ctx, be, "w/obj", max)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%T: read whole with bound %d: %d bytes, %v", be, max, len(got), err)
			}
		}
		for _, max := range []int64{int64(len(data)) - 1, 1, 0} {
			got, err := backend.ReadWhole(ctx, be, "w/obj", max)
			if !errors.Is(err, backend.ErrTooLarge) || got != nil {
				t.Fatalf("%T: read whole a %d-byte object with bound %d: %d bytes, %v; want ErrTooLarge", be, len(data), max, len(got), err)
			}
		}
		if got, err := backend.ReadWhole(ctx, be, "w/empty", 0); err != nil || len(got) != 0 {
			t.Fatalf("%T: read whole an empty object: %d bytes, %v", be, len(got), err)
		}
		if _, err := backend.ReadWhole(ctx, be, "w/missing", 10); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("%T: read whole a missing object: %v, want ErrNotFound", be, err)
		}
	}
	// The bounded read is usable again after a refusal (a remote
	// connection dropped mid-answer is replaced).
	if got, err := backend.ReadWhole(ctx, b, "w/obj", 1<<30); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read whole after a refusal: %d bytes, %v", len(got), err)
	}
}

// statOnly hides a backend's own bounded read, so ReadWhole takes the Stat
// path.
type statOnly struct{ backend.Backend }

// Bench runs the backend throughput benchmarks (put and ranged get of 4 MiB
// objects, the size of a pack).
func Bench(b *testing.B, newBackend NewFunc) {
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(3)).Read(data)
	b.Run("Put4MiB", func(b *testing.B) {
		be := newBackend(b)
		defer be.Close()
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			if err := be.PutIfAbsent(ctx, fmt.Sprintf("p/%08d", i), data); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The small reads and stats of a deep name (a pack's) measure what a
	// backend spends per call on the name (path checks), not on the bytes.
	deep := "packs/ab/ab" + strings.Repeat("0123456789abcdef", 3) + "0123456789abcd"
	b.Run("Get4KiBDeep", func(b *testing.B) {
		be := newBackend(b)
		defer be.Close()
		if err := be.PutIfAbsent(ctx, deep, data[:1<<20]); err != nil {
			b.Fatal(err)
		}
		for i := 0; b.Loop(); i++ {
			if _, err := be.Get(ctx, deep, int64(i%256)<<12, 4<<10); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("StatDeep", func(b *testing.B) {
		be := newBackend(b)
		defer be.Close()
		if err := be.PutIfAbsent(ctx, deep, data[:4<<10]); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := be.Stat(ctx, deep); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get64KiBRange", func(b *testing.B) {
		be := newBackend(b)
		defer be.Close()
		if err := be.PutIfAbsent(ctx, "g", data); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(64 << 10)
		for i := 0; i < b.N; i++ {
			off := int64(i%64) << 16
			if _, err := be.Get(ctx, "g", off, 64<<10); err != nil {
				b.Fatal(err)
			}
		}
	})
}
