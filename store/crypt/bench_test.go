package crypt

import (
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"golang.org/x/crypto/argon2"
)

func BenchmarkSeal(b *testing.B) {
	k := NewMasterKey().Keys()
	ad := ChunkAD(chunker.ID{1})
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			pt := make([]byte, size)
			rand.Read(pt)
			dst := make([]byte, 0, size+Overhead)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				dst = k.Seal(dst[:0], pt, ad)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	k := NewMasterKey().Keys()
	ad := ChunkAD(chunker.ID{1})
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			pt := make([]byte, size)
			rand.Read(pt)
			env := k.Seal(nil, pt, ad)
			dst := make([]byte, 0, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if dst, err = k.Open(dst[:0], env, ad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkID compares the keyed chunk id with chunker.Sum on a 4 KiB page.
func BenchmarkID(b *testing.B) {
	k := NewMasterKey().Keys()
	page := make([]byte, 4<<10)
	rand.Read(page)
	b.Run("keyed", func(b *testing.B) {
		b.SetBytes(int64(len(page)))
		b.ReportAllocs()
		for b.Loop() {
			k.ID(page)
		}
	})
	b.Run("chunker.Sum", func(b *testing.B) {
		b.SetBytes(int64(len(page)))
		b.ReportAllocs()
		for b.Loop() {
			chunker.Sum(page)
		}
	})
}

// BenchmarkKDF is one passphrase unwrap's key derivation with
// DefaultKDFParams (the memory it takes is MemoryKiB, reported as a metric).
func BenchmarkKDF(b *testing.B) {
	p := DefaultKDFParams
	salt := make([]byte, minSaltSize)
	for b.Loop() {
		argon2.IDKey([]byte("correct horse battery staple"), salt, p.Time, p.MemoryKiB, uint8(p.Threads), 32)
	}
	b.ReportMetric(float64(p.MemoryKiB)/1024, "MiB")
}
