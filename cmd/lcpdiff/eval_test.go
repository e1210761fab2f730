package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/eval"
	"github.com/lcpdiff/lcpdiff/internal/golden"
	"github.com/lcpdiff/lcpdiff/internal/pipeline"
)

// evalArgs are "eval" of DreamBench on the tiny models: tiny-sd at 64x64
// with two steps, the golden CLIP, DINO and detector.
func evalArgs(t *testing.T, out string, extra ...string) []string {
	args := []string{"eval", "--bench", "dreambench", "--data", filepath.Join(golden.Dir(t), "..", "dreambench"),
		"--limit", "2", "--images-per-prompt", "2", "-m", golden.Path(t, "tiny-sd"), "--steps", "2", "-W", "64", "-H", "64",
		"--clip", golden.Path(t, "eval", "tiny-clip"), "--dino", golden.Path(t, "eval", "dino_vits16_tiny.safetensors"),
		"--dino-heads", "4", "--detector", golden.Path(t, "eval", "tiny_detector.pt"), "-q", "--out", out}
	return append(args, extra...)
}

func TestEvalDreamBenchEndToEnd(t *testing.T) {
	lcp := filepath.Join(t.TempDir(), "parts")
	log, err := run(t, append(evalArgs(t, lcp), tinyParts(t)...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for _, want := range []string{
		"| IP-Adapter + GLIGEN + box guidance | dreambench | 2 |", // the method label, from the weights
		"2 images in", "images/s",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
	records := strings.Split(strings.TrimSpace(readFile(t, filepath.Join(lcp, eval.RecordsFile))), "\n")
	if len(records) != 2 {
		t.Fatalf("%d records, want 2", len(records))
	}
	var rec eval.Record
	if err := json.Unmarshal([]byte(records[1]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ID != "backpack/p00/i1" || rec.Seed != 1 || rec.Prompt != "a backpack in the jungle" || len(rec.CLIP) != 24 ||
		len(rec.DINO) != 32 || rec.Detections == nil || rec.Width != 64 {
		t.Errorf("record %+v", rec)
	}
	params, ok, err := pipeline.ReadParameters(filepath.Join(lcp, rec.Image))
	if err != nil || !ok || !strings.HasPrefix(params, "a backpack in the jungle\nSteps: 2, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 64x64") ||
		!strings.Contains(params, `Subjects: "backpack@0.25,0.25,0.75,0.75"`) {
		t.Errorf("image parameters %q, %v %v", params, ok, err)
	}
	sum, err := eval.ReadSummary(lcp)
	if err != nil {
		t.Fatal(err)
	}
	s := sum.Scores
	if sum.Images != 2 || s.CLIPI == nil || s.CLIPT == nil || s.DINO == nil || s.AP == nil || len(sum.Notes) != 0 ||
		len(sum.Subjects) != 1 || sum.Subjects[0].References != 6 || len(sum.ContactSheets) != 1 {
		t.Errorf("summary %+v", sum)
	}
	for _, name := range []string{eval.SummaryMarkdownFile, eval.SubjectsMarkdownFile, sum.ContactSheets[0], eval.SettingsFile} {
		if _, err := os.Stat(filepath.Join(lcp, name)); err != nil {
			t.Error(err)
		}
	}

	// A second run finds every record: it makes nothing (the model is not
	// even loaded) and writes the same summary.
	before := readFile(t, filepath.Join(lcp, eval.SummaryFile))
	log, err = run(t, append(evalArgs(t, lcp), tinyParts(t)...)...)
	if err != nil || !strings.Contains(log, "2 of 2 images already recorded") || strings.Contains(log, "images in") {
		t.Fatalf("rerun: %v\n%s", err, log)
	}
	if after := readFile(t, filepath.Join(lcp, eval.SummaryFile)); after != before {
		t.Error("rerun changed summary.json")
	}
	// --rescore measures the PNGs again, still without the model: with the
	// same metric models, to the same summary.
	log, err = run(t, append(evalArgs(t, lcp, "--rescore"), tinyParts(t)...)...)
	if err != nil || !strings.Contains(log, "rescored the 2 recorded images") || strings.Contains(log, "images in") {
		t.Fatalf("rescore: %v\n%s", err, log)
	}
	if after := readFile(t, filepath.Join(lcp, eval.SummaryFile)); after != before {
		t.Error("rescoring with the same models changed summary.json")
	}
	// Other settings in the same folder are refused.
	if _, err := run(t, append(evalArgs(t, lcp, "--steps", "3"), tinyParts(t)...)...); err == nil || !strings.Contains(err.Error(), `steps="2"`) {
		t.Errorf("other settings: %v", err)
	}

	// The base row: plain text-to-image, only CLIP given.
	base := filepath.Join(t.TempDir(), "base")
	args := evalArgs(t, base)
	args = append(args[:slices.Index(args, "--dino")], "-q", "--out", base)
	if log, err := run(t, args...); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	table, err := run(t, "eval", "--compare", base, lcp)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(table, "\n")
	if !strings.HasPrefix(lines[0], "| method | bench | images | CLIP-I | DINO | CLIP-T | AP | AP50 | AP75 |") ||
		!strings.HasPrefix(lines[2], "| base | dreambench | 2 | ") || !strings.Contains(lines[2], " | - | - | - |") ||
		!strings.HasPrefix(lines[3], "| IP-Adapter + GLIGEN + box guidance | dreambench | 2 | ") ||
		!strings.Contains(table, "- base ("+base+"): DINO not measured") {
		t.Errorf("compare:\n%s", table)
	}
}

func TestEvalBadInvocations(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", ""}, "--out DIR"},
		{[]string{"--bench", "imagenet"}, `unknown bench "imagenet"`},
		{[]string{"--data", dir}, "prompts_and_classes.txt"},
		{[]string{"--limit", "-1"}, "--limit -1"},
		{[]string{"--seed", "-2"}, "--seed -2"},
		{[]string{"--detector", filepath.Join(dir, "none.pt")}, "none.pt.json"},
		{[]string{"--clip", dir}, "preprocessor_config.json"},
		{[]string{"--ip-adapter", filepath.Join(dir, "none.safetensors")}, "none.safetensors"},
		{[]string{"--ip-adapter", filepath.Join(dir, "x"), "--adapter", filepath.Join(dir, "y")}, "not both"},
		{[]string{"--class-map", filepath.Join(dir, "map.json"), "--detector", ""}, "give --detector too"},
		{[]string{"extra-argument"}, "--compare"},
		{[]string{"--vae-round-trip"}, "bench dreambench has no target images"},
	} {
		_, err := run(t, append(evalArgs(t, out), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("a refused run left a run folder")
	}
	if _, err := run(t, "eval", "--compare", dir); err == nil || !strings.Contains(err.Error(), "summary.json") {
		t.Errorf("--compare of a folder without summary: %v", err)
	}
}

func TestMethodLabel(t *testing.T) {
	for _, c := range []struct {
		w               weightSpec
		guide, restrict bool
		want            string
	}{
		{weightSpec{}, true, true, "base"},
		{weightSpec{adapter: "a"}, true, true, "LCP"},
		{weightSpec{adapter: "a"}, false, true, "LCP without box guidance"},
		{weightSpec{ipAdapter: "i"}, false, true, "IP-Adapter"},
		{weightSpec{ipAdapter: "i"}, true, false, "IP-Adapter + box guidance (no region restriction)"},
		{weightSpec{gligen: "g"}, false, true, "GLIGEN"},
	} {
		if got := methodLabel(c.w, c.guide, c.restrict); got != c.want {
			t.Errorf("%+v guidance %v restrict %v: %q, want %q", c.w, c.guide, c.restrict, got, c.want)
		}
	}
	// Every generation flag eval takes is one of generate's rows.
	if got := pickFlags(generateFlags, evalGenerationFlags); len(got) != len(evalGenerationFlags) {
		t.Fatal("pickFlags lost a row")
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
