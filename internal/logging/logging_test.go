package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestLevelChangesAtRunTime(t *testing.T) {
	var buf bytes.Buffer
	log, lv, err := New(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hidden")
	log.Warn().Msg("shown")
	if err := lv.Set("debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("now shown")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "shown") || !strings.Contains(out, "now shown") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if err := lv.Set("loud"); err == nil {
		t.Fatal("bad level accepted")
	}
	if _, _, err := New(&buf, "info", "xml"); err == nil {
		t.Fatal("bad format accepted")
	}
}
