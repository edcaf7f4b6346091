package store

import (
	"bytes"
	"slices"
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
		sealed := sealRecord(keys, "n", 1, 2, stmts)
		p, err := keys.Open(nil, sealed, crypt.RecordAD("n", 1, 2))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		stmts, err := decodeSealedStatements(p)
		if err != nil {
			return
		}
		sealed := sealRecord(keys, "n", 1, 2, stmts)
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
	r := journal.Record{Seq: 7, Version: 9, Statements: []string{string(sealRecord(keys, "alice", 7, 9, stmts))}}
	got, err := openRecord(keys, "alice", r)
	if err != nil || !slices.Equal(got.Statements, stmts) {
		t.Fatalf("open: %q %v", got.Statements, err)
	}
	for name, edit := range map[string]func(r *journal.Record) (node string){
		"other node":    func(r *journal.Record) string { return "bob" },
		"other seq":     func(r *journal.Record) string { r.Seq++; return "alice" },
		"other version": func(r *journal.Record) string { r.Version++; return "alice" },
		"other key": func(r *journal.Record) string {
			r.Statements = []string{string(sealRecord(crypt.NewMasterKey().Keys(), "alice", 7, 9, stmts))}
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
		if _, err := openRecord(keys, node, c); err == nil {
			t.Fatalf("%s: a tampered record opened", name)
		}
	}
}
