package nn

import (
	"errors"
	"testing"
)

func TestNewFromNameRoundTrips(t *testing.T) {
	for _, name := range []string{"mlp:784-256-10", "mlp:20-30-40-5", "charlm:v96-t64-d64-h128", "charlm:v65-t16-d32-h0", "charlm:v5-t4-d8-h16", "charlm:v96-t64-d64-h128-ln", "charlm:v7-t8-d8-h0-ln"} {
		m, err := NewFromName(name, 3, 9)
		if err != nil {
			t.Fatalf("NewFromName(%q): %v", name, err)
		}
		if m.Name() != name || m.BatchSize() != 3 {
			t.Errorf("NewFromName(%q) built %q with batch %d", name, m.Name(), m.BatchSize())
		}
	}
	m, err := NewFromName("charlm:v96-t64-d64-h128", 0, 9)
	if err != nil || m.BatchSize() != 32 {
		t.Errorf("default batch: %v, %v", m, err)
	}
}

func TestNewFromNameRejects(t *testing.T) {
	for _, name := range []string{
		"", "mlp", "cnn:1-2", "mlp:784", "mlp:784-0-10", "charlm:", "charlm:v96-t64-d64", "charlm:v96-t64-d64-h128-x",
		"charlm:96-64-64-128", "charlm:v1-t64-d64-h0", "charlm:v96-t1-d64-h0", "charlm:v96-t64-d0-h0", "charlm:v96-t64-d64-h1",
		"charlm:v96-t64-d64-h-5", "charlm:v96-t64-d64-ln", "charlm:v96-t64-d64-h0-ln-ln", "charlm:vx-t64-d64-h0", "charlm:t64-v96-d64-h0",
	} {
		if m, err := NewFromName(name, 0, 0); !errors.Is(err, ErrConfig) {
			t.Errorf("NewFromName(%q) = %v, %v; want ErrConfig", name, m, err)
		}
	}
}
