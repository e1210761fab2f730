package eval

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
)

func loadDreamBench(t *testing.T) *DreamBench {
	t.Helper()
	d, err := LoadDreamBench(filepath.Join(golden.Dir(t), "..", "dreambench"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDreamBenchLoad checks the parse against subjects.json, which the
// dataset's maker derived from the same file independently.
func TestDreamBenchLoad(t *testing.T) {
	d := loadDreamBench(t)
	var meta struct {
		NImages  int `json:"n_images"`
		Subjects []struct {
			Name, Class, Kind string
			Images            []json.RawMessage
		}
		PromptTemplates struct{ Object, Live []string } `json:"prompt_templates"`
	}
	raw, err := os.ReadFile(filepath.Join(d.Dir, "subjects.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	if len(d.Subjects) != 30 || len(d.ObjectPrompts) != 25 || len(d.LivePrompts) != 25 {
		t.Fatalf("%d subjects, %d object and %d live prompts; want 30, 25, 25",
			len(d.Subjects), len(d.ObjectPrompts), len(d.LivePrompts))
	}
	if !reflect.DeepEqual(d.ObjectPrompts, meta.PromptTemplates.Object) || !reflect.DeepEqual(d.LivePrompts, meta.PromptTemplates.Live) {
		t.Errorf("prompt templates differ from subjects.json")
	}
	if len(meta.Subjects) != len(d.Subjects) {
		t.Fatalf("subjects.json has %d subjects", len(meta.Subjects))
	}
	live, images := 0, 0
	for i, s := range d.Subjects {
		m := meta.Subjects[i]
		if s.Name != m.Name || s.Class != m.Class || s.Live != (m.Kind == "live") || len(s.Images) != len(m.Images) {
			t.Errorf("subject %d = %s %q live=%v %d images; subjects.json %s %q %s %d images",
				i, s.Name, s.Class, s.Live, len(s.Images), m.Name, m.Class, m.Kind, len(m.Images))
		}
		for j, p := range s.Images {
			if want := filepath.Join(d.Dir, s.Name, []string{"00", "01", "02", "03", "04", "05"}[j]+".jpg"); p != want {
				t.Errorf("%s image %d = %s, want %s", s.Name, j, p, want)
			}
		}
		if s.Live {
			live++
		}
		images += len(s.Images)
	}
	if live != 9 || images != meta.NImages || images != 158 {
		t.Errorf("%d live subjects, %d images; want 9, 158", live, images)
	}
	if got := DreamBoothPrompt(d.LivePrompts[0], "sks", "dog"); got != "a sks dog in the jungle" {
		t.Errorf("DreamBooth prompt %q", got)
	}
	if got := TuningFreePrompt(d.LivePrompts[0], "dog"); got != "a dog in the jungle" {
		t.Errorf("tuning-free prompt %q", got)
	}
	if got := TuningFreePrompt(d.ObjectPrompts[24], "stuffed animal"); got != "a cube shaped stuffed animal" {
		t.Errorf("tuning-free prompt %q", got)
	}
}

// TestDreamBenchCases checks every single-subject case: the prompt names
// the class and no unique token, the box is a non-empty part of the image,
// and the listing is deterministic.
func TestDreamBenchCases(t *testing.T) {
	d := loadDreamBench(t)
	cases := d.Cases(CaseOptions{})
	if len(cases) != 30*25*DefaultImagesPerPrompt {
		t.Fatalf("%d cases, want 3000", len(cases))
	}
	layouts := map[string]map[string]bool{} // subject -> layouts used
	for i, c := range cases {
		p := " " + c.Prompt + " "
		if !strings.Contains(p, " "+c.Subject.Class+" ") {
			t.Errorf("case %d: %q does not name %q", i, c.Prompt, c.Subject.Class)
		}
		if strings.ContainsAny(c.Prompt, "{}") || strings.Contains(c.Prompt, "sks") || strings.Contains(c.Prompt, "  ") {
			t.Errorf("case %d: %q is not a tuning-free prompt", i, c.Prompt)
		}
		if want := TuningFreePrompt(d.Prompts(c.Subject)[c.PromptIndex], c.Subject.Class); c.Prompt != want {
			t.Errorf("case %d: prompt %q, want %q", i, c.Prompt, want)
		}
		if !boxInUnit(c.Box) {
			t.Errorf("case %d: box %v", i, c.Box)
		}
		if c.Seed != uint64(c.ImageIndex) || c.ImageIndex != i%DefaultImagesPerPrompt {
			t.Errorf("case %d: seed %d image %d", i, c.Seed, c.ImageIndex)
		}
		if layouts[c.Subject.Name] == nil {
			layouts[c.Subject.Name] = map[string]bool{}
		}
		layouts[c.Subject.Name][c.Layout] = true
	}
	for name, used := range layouts {
		if len(used) != len(DreamBenchLayouts) {
			t.Errorf("%s uses layouts %v", name, used)
		}
	}
	if c := cases[4*(25+3)]; c.Subject.Name != "backpack_dog" || c.PromptIndex != 3 || c.Layout != "large" {
		t.Errorf("case %d = %s prompt %d %s, want backpack_dog prompt 3 large", 4*28, c.Subject.Name, c.PromptIndex, c.Layout)
	}

	again := loadDreamBench(t).Cases(CaseOptions{})
	for i := range cases {
		a, b := cases[i], again[i]
		if a.Subject.Name != b.Subject.Name || a.Prompt != b.Prompt || a.Box != b.Box || a.Seed != b.Seed {
			t.Fatalf("case %d differs between two loads: %+v, %+v", i, a, b)
		}
	}
	opts := CaseOptions{ImagesPerPrompt: 2, BaseSeed: 100, Limit: 7}
	short := d.Cases(opts)
	full := d.Cases(CaseOptions{ImagesPerPrompt: 2, BaseSeed: 100})
	if len(short) != 7 || !reflect.DeepEqual(short, full[:7]) || len(full) != 30*25*2 {
		t.Errorf("Limit 7 gives %d cases of %d", len(short), len(full))
	}
	if full[1].Seed != 101 || full[2].Seed != 100 {
		t.Errorf("seeds %d %d, want 101 100", full[1].Seed, full[2].Seed)
	}
}

func TestDreamBenchMultiCases(t *testing.T) {
	d := loadDreamBench(t)
	cases, err := d.MultiCases(CaseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(DreamBenchPairs) * len(DreamBenchMultiPrompts) * DefaultImagesPerPrompt; len(cases) != want {
		t.Fatalf("%d cases, want %d", len(cases), want)
	}
	for i, c := range cases {
		live, obj := c.Subjects[0], c.Subjects[1]
		if !live.Live || obj.Live || live.Class == obj.Class {
			t.Errorf("case %d: pair %s (%s), %s (%s)", i, live.Name, live.Class, obj.Name, obj.Class)
		}
		if !strings.Contains(c.Prompt, "a "+live.Class+" and a "+obj.Class+" ") || strings.ContainsAny(c.Prompt, "{}") {
			t.Errorf("case %d: %q does not name both", i, c.Prompt)
		}
		a, b := c.Boxes[0], c.Boxes[1]
		if !boxInUnit(a) || !boxInUnit(b) {
			t.Errorf("case %d: boxes %v", i, c.Boxes)
		}
		if a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3] {
			t.Errorf("case %d: boxes %v overlap", i, c.Boxes)
		}
		if c.Seed != uint64(c.ImageIndex) {
			t.Errorf("case %d: seed %d image %d", i, c.Seed, c.ImageIndex)
		}
	}
	// The multi prompts are DreamBench's scene prompts with both
	// subjects named.
	for i, m := range DreamBenchMultiPrompts {
		scene := strings.TrimPrefix(m, "a {live} and a {object}")
		if d.ObjectPrompts[i] != "a {0} {1}"+scene || d.LivePrompts[i] != "a {0} {1}"+scene {
			t.Errorf("multi prompt %d %q is not DreamBench scene %q", i, m, d.ObjectPrompts[i])
		}
	}
	short, err := d.MultiCases(CaseOptions{Limit: 5})
	if err != nil || !reflect.DeepEqual(short, cases[:5]) {
		t.Errorf("Limit 5: %v", err)
	}
	partial := &DreamBench{Dir: "x", Subjects: d.Subjects[:3]}
	if _, err := partial.MultiCases(CaseOptions{}); err == nil || !strings.Contains(err.Error(), `"dog"`) {
		t.Errorf("missing pair subject: %v", err)
	}
}

func boxInUnit(b [4]float64) bool {
	return 0 <= b[0] && b[0] < b[2] && b[2] <= 1 && 0 <= b[1] && b[1] < b[3] && b[3] <= 1
}

func TestDreamBenchErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadDreamBench(filepath.Join(dir, "nope"))
	if err == nil || !strings.Contains(err.Error(), DreamBenchPromptsFile) {
		t.Errorf("missing folder: %v", err)
	}
	good, err := os.ReadFile(filepath.Join(golden.Dir(t), "..", "dreambench", DreamBenchPromptsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"no header", "Classes\n", "Subjects\n", `:1: want "Classes"`},
		{"bad row", "can,can\n", "can\n", `:8: want "subject,class"`},
		{"duplicate", "candle,candle\n", "can,can\n", `subject "can" listed twice`},
		{"bad template", "'a {0} {1} in the snow'.format(", "'a {0} {1} in the snow'.formt(", ":41: want '<template>'"},
		{"no token", "'a {0} {1} on the beach'", "'a {1} on the beach'", `must hold "{0} " and "{1}"`},
		{"stray brace", "'a {0} {1} on the beach'", "'a {0} {1} on the {2}'", "brace other than"},
		{"unclosed", "", "", "not closed"},
	} {
		text := strings.Replace(string(good), tc.old, tc.new, 1)
		if tc.old == "" { // drop the final "]"
			text = strings.TrimSuffix(text, "]\n")
		}
		if text == string(good) {
			t.Fatalf("%s: edit did not apply", tc.name)
		}
		sub := t.TempDir()
		path := filepath.Join(sub, DreamBenchPromptsFile)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadDreamBench(sub)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line naming %s and %q", tc.name, err, path, tc.want)
		}
	}
	// A subject folder missing: the prompts parse, the photos do not.
	if err := os.WriteFile(filepath.Join(dir, DreamBenchPromptsFile), good, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDreamBench(dir); err == nil || !strings.Contains(err.Error(), `subject "backpack"`) {
		t.Errorf("missing subject folder: %v", err)
	}
}
