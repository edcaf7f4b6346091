package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/journal"
)

// FuzzDecodeSealedStatements: the plaintext of a sealed record decodes
// strictly or fails, never panics, and what decodes re-encodes to the same
// bytes.
func FuzzDecodeSealedStatements(f *testing.F) {
	keys := crypt.NewMasterKey().Keys()
	for _, stmts := range [][]string{nil, {"UPDATE vars SET intval=1;"}, {"a", "", "b"}} {
		sealed := sealRecord(keys, "n", 1, 2, sealedAppend, stmts)
		p, err := keys.Open(nil, sealed, crypt.RecordAD("n", 1, 2))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, p []byte) {
		kind, stmts, err := decodeSealedStatements(p)
		if err != nil {
			return
		}
		sealed := sealRecord(keys, "n", 1, 2, kind, stmts)
		again, err := keys.Open(nil, sealed, crypt.RecordAD("n", 1, 2))
		if err != nil || !bytes.Equal(again, p) {
			t.Fatalf("statements %q re-encode to %x, decoded from %x", stmts, again, p)
		}
	})
}

// TestOpenRecord: a sealed record opens only at its node, seq and
// data_version, and one in the clear never does.
func TestOpenRecord(t *testing.T) {
	keys := crypt.NewMasterKey().Keys()
	stmts := []string{"INSERT INTO t VALUES (1);", "UPDATE vars SET intval=2;"}
	r := journal.Record{Seq: 7, Version: 9, Statements: []string{string(sealRecord(keys, "alice", 7, 9, sealedAppend, stmts))}}
	got, kind, err := openRecord(keys, "alice", r)
	if err != nil || kind != sealedAppend || !slices.Equal(got.Statements, stmts) {
		t.Fatalf("open: %q %v", got.Statements, err)
	}
	for name, edit := range map[string]func(r *journal.Record) (node string){
		"other node":    func(r *journal.Record) string { return "bob" },
		"other seq":     func(r *journal.Record) string { r.Seq++; return "alice" },
		"other version": func(r *journal.Record) string { r.Version++; return "alice" },
		"other key": func(r *journal.Record) string {
			r.Statements = []string{string(sealRecord(crypt.NewMasterKey().Keys(), "alice", 7, 9, sealedAppend, stmts))}
			return "alice"
		},
		"in the clear": func(r *journal.Record) string { r.Statements = stmts; return "alice" },
		"bit flipped": func(r *journal.Record) string {
			b := []byte(r.Statements[0])
			b[len(b)/2] ^= 1
			r.Statements = []string{string(b)}
			return "alice"
		},
	} {
		c := r
		node := edit(&c)
		if _, _, err := openRecord(keys, node, c); err == nil {
			t.Fatalf("%s: a tampered record opened", name)
		}
	}
}

// flipFrameKind turns the frame of record seq in a journal segment from
// append to replace or back, with a valid CRC: what a store host can do
// without the key.
func flipFrameKind(t *testing.T, dir string, seq uint64) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		for off := 32; off+8 <= len(data); {
			n := int(binary.LittleEndian.Uint32(data[off:]))
			if n == 0 {
				break
			}
			p := data[off+8 : off+8+n]
			if binary.LittleEndian.Uint64(p[1:]) == seq {
				p[0] ^= 3 // 1 <-> 2
				binary.LittleEndian.PutUint32(data[off+4:], crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)))
				if err := os.WriteFile(seg, data, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			off += 8 + n
		}
	}
	t.Fatalf("no record %d in %s", seq, dir)
}

// TestSealedRecordKinds: a journal frame's kind (append or replace) is in
// the clear, and the journal resolves replacements by it; the kind sealed
// in the record catches a frame turned from one into the other, which
// would void authentic changes or let a rewound change through.
func TestSealedRecordKinds(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		write func(j Journal) error
		flip  uint64
		want  string
	}{
		{"append turned into a replace", func(j Journal) error {
			for _, r := range []journal.Record{{Version: 1, Statements: []string{"INSERT INTO t VALUES (1);"}}, {Version: 1, Statements: []string{"PRAGMA foreign_keys = ON;"}}, {Version: 2, Statements: []string{"INSERT INTO t VALUES (2);"}}} {
				if _, err := j.Append(r); err != nil {
					return err
				}
			}
			return nil
		}, 2, "sealed as an append, it follows record 0"},
		{"replace turned into an append", func(j Journal) error {
			if _, err := j.Append(journal.Record{Version: 1, Statements: []string{"INSERT INTO t VALUES (1);"}}); err != nil {
				return err
			}
			_, err := j.Replace(journal.Record{Version: 1, Statements: []string{"INSERT INTO t VALUES (10);"}})
			return err
		}, 2, "sealed as a replace of data_version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st, _, err := Create(ctx, "file://"+dir, Options{Encrypt: &Encryption{Passphrase: []byte("p"), KDF: crypt.KDFParams{Name: "argon2id", Time: 1, MemoryKiB: 8 << 10, Threads: 1}}})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			j, err := st.OpenJournal(ctx, "n3")
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.write(j); err != nil {
				t.Fatal(err)
			}
			j.Close()
			read := func() error {
				return st.ReadJournal(ctx, "n3", 0, func(journal.Record) error { return nil })
			}
			if err := read(); err != nil {
				t.Fatalf("untouched journal: %v", err)
			}
			flipFrameKind(t, filepath.Join(dir, "nodes", "n3", "journal"), tc.flip)
			err = read()
			if err == nil || !errors.Is(err, journal.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("read after the flip: %v, want %q", err, tc.want)
			}
		})
	}
}
