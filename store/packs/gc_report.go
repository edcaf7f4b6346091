package packs

import (
	"fmt"
	"time"

	"github.com/clnbackup/backup/internal/units"
)

// GCReport says what a gc run did and why it kept what it kept.
type GCReport struct {
	Nodes        int `json:"nodes"`
	Manifests    int `json:"manifests"`
	LiveChunks   int `json:"live_chunks"`
	Packs        int `json:"packs"`
	StoredChunks int `json:"stored_chunks"`
	// DeletedPacks were entirely unreferenced; RepackedPacks had their live
	// chunks rewritten to new packs first.
	DeletedPacks  int `json:"deleted_packs"`
	RepackedPacks int `json:"repacked_packs"`
	// ConsolidatedPacks were small packs whose live chunks were rewritten
	// together into ConsolidatedInto new packs.
	ConsolidatedPacks int   `json:"consolidated_packs"`
	ConsolidatedInto  int   `json:"consolidated_into"`
	DeletedChunks     int   `json:"deleted_chunks"`
	ReclaimedBytes    int64 `json:"reclaimed_bytes"`
	RewrittenBytes    int64 `json:"rewritten_bytes"`
	// Kept, by reason.
	YoungChunks    int `json:"kept_young_chunks"`
	NewlyCondemned int `json:"newly_condemned_chunks"`
	WaitingChunks  int `json:"kept_condemned_chunks"`
	BlockedChunks  int `json:"kept_dead_chunks_in_live_packs"`
	RescuedChunks  int `json:"rescued_chunks"`
	// WaitingPacks are packs without an index (a writer died between the
	// pack and its index, or is writing it right now): like unreferenced
	// chunks, they are condemned first and deleted a grace period later.
	WaitingPacks   int  `json:"kept_unindexed_packs"`
	RecheckedAdded int  `json:"manifests_found_on_recheck"`
	DryRun         bool `json:"dry_run"`
	// Exclusive: the run held every node's lease and deleted unreferenced
	// chunks with no grace period (GCOptions.Exclusive).
	Exclusive       bool          `json:"exclusive"`
	Grace           time.Duration `json:"grace_ns"`
	CondemnedRecord string        `json:"condemned_record,omitempty"`
}

// Lines describes the report for people.
func (r GCReport) Lines() []string {
	verb := ""
	if r.DryRun {
		verb = "would be "
	}
	return []string{
		fmt.Sprintf("%d nodes, %d manifests reference %d chunks; the store holds %d chunk copies in %d packs", r.Nodes, r.Manifests, r.LiveChunks, r.StoredChunks, r.Packs),
		fmt.Sprintf("%sdeleted: %d packs entirely unreferenced, %d chunks, %s reclaimed", verb, r.DeletedPacks, r.DeletedChunks, units.Bytes(r.ReclaimedBytes)),
		fmt.Sprintf("%srepacked: %d packs, consolidated: %d small packs into %d (%s of live chunks rewritten)", verb, r.RepackedPacks, r.ConsolidatedPacks, r.ConsolidatedInto, units.Bytes(r.RewrittenBytes)),
		fmt.Sprintf("kept: %d chunks younger than the grace period (%s)", r.YoungChunks, r.Grace),
		fmt.Sprintf("kept: %d unreferenced chunks %scondemned now, %d condemned less than the grace period ago (deleted by a later gc)", r.NewlyCondemned, verb, r.WaitingChunks),
		fmt.Sprintf("kept: %d unreferenced chunks in packs that are mostly live; %d condemned chunks referenced again (rescued); %d packs without an index condemned less than the grace period ago", r.BlockedChunks, r.RescuedChunks, r.WaitingPacks),
	}
}
