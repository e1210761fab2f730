package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
)

func TestDataToyWorld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "toy")
	out, err := run(t, "data", "toyworld", "--out", dir, "-s", "3", "--clips", "4", "--images", "3", "--size", "32", "--frames", "3")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "wrote 7 training and 2 test records (24 identities, 4 held out)") {
		t.Fatalf("output:\n%s", out)
	}
	m, err := data.LoadManifest(filepath.Join(dir, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Records) != 7 || len(m.Records[0].Frames) != 3 {
		t.Fatalf("%d records, %d frames in the first", len(m.Records), len(m.Records[0].Frames))
	}
	f, err := m.Records[0].LoadFrame(0)
	if err != nil || f.Image.W != 32 {
		t.Fatalf("frame 0: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "identities.json")); err != nil {
		t.Fatal(err)
	}
}

func TestDataToyWorldErrors(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"data", "toyworld"}, "--out: give the folder"},
		{[]string{"data", "toyworld", "--out", full}, "is not empty"},
		{[]string{"data", "toyworld", "--out", t.TempDir(), "--seed", "-1"}, "--seed -1"},
		{[]string{"data", "toyworld", "--out", t.TempDir(), "--size", "8"}, "size 8"},
		{[]string{"data", "toyworld", "--out", t.TempDir(), "extra"}, "unknown command"},
	} {
		_, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("lcpdiff %v: got %v, want %q", c.args, err, c.want)
		}
	}
}
