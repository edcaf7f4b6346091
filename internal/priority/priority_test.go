package priority

import (
	"context"
	"testing"
)

// TestBackgroundMark: only a context marked by Background (and those
// derived from it) makes workers lower themselves; with Env "normal"
// nothing is marked.
func TestBackgroundMark(t *testing.T) {
	ctx := context.Background()
	if IsBackground(ctx) {
		t.Fatal("a plain context is marked")
	}
	low := Background(ctx)
	derived, cancel := context.WithCancel(low)
	defer cancel()
	if !IsBackground(low) || !IsBackground(derived) {
		t.Fatal("a Background context (or one derived from it) is not marked")
	}
	t.Setenv(Env, "normal")
	if IsBackground(Background(ctx)) {
		t.Fatalf("%s=normal still marks contexts", Env)
	}
}
