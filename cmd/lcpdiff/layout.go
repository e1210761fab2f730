package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/lcpdiff/lcpdiff/internal/model/gligen"
)

// scene is a prompt and the subjects in it, as a layout file (--layout) or
// the single-subject flags (--ref, --mask, --box, --word) describe them.
// A layout file, YAML or JSON:
//
//	prompt: a dog and a cat on the beach
//	negative_prompt: blurry        # optional
//	subjects:
//	  - refs: [dog1.jpg, dog2.jpg] # views of the subject
//	    masks: [dog1.png, null]    # per view; null or none: the whole image
//	    box: [0.05, 0.3, 0.45, 0.95]
//	    word: dog                  # the word(s) of the prompt naming it
//	    category: dog              # default: word
//	    phrase: a brown dog        # default: word
//
// Relative paths are relative to the layout file's folder, so that a scene
// and its images move together.
type scene struct {
	Prompt         string        `yaml:"prompt" json:"prompt"`
	NegativePrompt string        `yaml:"negative_prompt" json:"negative_prompt"`
	Subjects       []subjectSpec `yaml:"subjects" json:"subjects"`
}

// subjectSpec is one subject as written down: paths and numbers, nothing
// read yet.
type subjectSpec struct {
	Refs     []string  `yaml:"refs" json:"refs"`
	Masks    maskPaths `yaml:"masks" json:"masks"` // Masks[i] goes with Refs[i]; "", "none" or missing: none
	Box      []float64 `yaml:"box" json:"box"`
	Word     string    `yaml:"word" json:"word"`
	Category string    `yaml:"category" json:"category"`
	Phrase   string    `yaml:"phrase" json:"phrase"`
}

// maskPaths are a subject's masks, view by view.
type maskPaths []string

// UnmarshalYAML keeps a null in its place, as "": decoding into []string,
// yaml.v3 drops nulls, and the masks after one would shift to the wrong
// views.
func (m *maskPaths) UnmarshalYAML(n *yaml.Node) error {
	var paths []*string
	if err := n.Decode(&paths); err != nil {
		return err
	}
	*m = make(maskPaths, len(paths))
	for i, p := range paths {
		if p != nil {
			(*m)[i] = *p
		}
	}
	return nil
}

// noMask is how a mask list says "this view has no mask" where null is not
// available (the --mask flag).
const noMask = "none"

// readScene is the scene of --layout or of the single-subject flags; a
// scene without subjects when neither is given.
func readScene(v *viper.Viper) (scene, error) {
	path := v.GetString("layout")
	if path != "" && len(v.GetStringSlice("ref")) > 0 {
		return scene{}, fmt.Errorf("--layout and --ref both give subjects: use one")
	}
	if path != "" {
		s, err := readLayout(path)
		if err != nil {
			return scene{}, fmt.Errorf("layout %s: %w", path, err)
		}
		return s, nil
	}
	return flagScene(v)
}

// readLayout reads a layout file, checks it and resolves its paths.
func readLayout(path string) (scene, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return scene{}, unwrapPathError(err)
	}
	var s scene
	if err := decodeStrict(b, filepath.Ext(path), &s); errors.Is(err, io.EOF) {
		return scene{}, errors.New("the file is empty")
	} else if err != nil {
		return scene{}, err
	}
	if len(s.Subjects) == 0 {
		return scene{}, errors.New("no subjects")
	}
	if err := s.check(); err != nil {
		return scene{}, err
	}
	s.resolve(filepath.Dir(path))
	return s, nil
}

// decodeStrict decodes YAML, or JSON for a .json file (YAML parsers reject
// the tab indentation JSON files often have), refusing unknown keys: a
// misspelt "mask" would otherwise silently leave a subject maskless.
func decodeStrict(b []byte, ext string, s *scene) error {
	if strings.EqualFold(ext, ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(s)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(s)
	if err != nil && !errors.Is(err, io.EOF) {
		// yaml.v3 lists one problem per line; the command reports one line.
		return errors.New(strings.Join(strings.Fields(err.Error()), " "))
	}
	return err
}

// flagScene is the single subject of --ref, --mask, --box and --word, or no
// subject when --ref is not given.
func flagScene(v *viper.Viper) (scene, error) {
	refs := v.GetStringSlice("ref")
	if len(refs) == 0 {
		if len(v.GetStringSlice("mask")) > 0 {
			return scene{}, fmt.Errorf("--mask describes the subject of --ref, which is not given")
		}
		for _, name := range []string{"box", "word", "category", "phrase"} {
			if v.GetString(name) != "" {
				return scene{}, fmt.Errorf("--%s describes the subject of --ref, which is not given", name)
			}
		}
		return scene{}, nil
	}
	if v.GetString("box") == "" || v.GetString("word") == "" {
		return scene{}, fmt.Errorf("--ref needs --box x0,y0,x1,y1 and --word (the word(s) of the prompt naming the subject)")
	}
	box, err := parseBox(v.GetString("box"))
	if err != nil {
		return scene{}, fmt.Errorf("--box: %w", err)
	}
	s := scene{Subjects: []subjectSpec{{
		Refs: refs, Masks: v.GetStringSlice("mask"), Box: box,
		Word: v.GetString("word"), Category: v.GetString("category"), Phrase: v.GetString("phrase"),
	}}}
	if err := s.check(); err != nil {
		return scene{}, err
	}
	return s, nil
}

// check validates the scene before anything is read, and fills in the
// defaults: a subject's category and phrase are its word.
func (s *scene) check() error {
	if n := len(s.Subjects); n > gligen.MaxObjects {
		return fmt.Errorf("%d subjects: the grounding tokens allow at most %d", n, gligen.MaxObjects)
	}
	for k := range s.Subjects {
		sub := &s.Subjects[k]
		switch {
		case len(sub.Refs) == 0:
			return fmt.Errorf("subject %d: no reference image (refs)", k+1)
		case len(sub.Masks) > len(sub.Refs):
			return fmt.Errorf("subject %d: %d masks for %d reference images", k+1, len(sub.Masks), len(sub.Refs))
		case strings.TrimSpace(sub.Word) == "":
			return fmt.Errorf("subject %d: no word: give the word(s) of the prompt that name it", k+1)
		}
		if err := checkBox(sub.Box); err != nil {
			return fmt.Errorf("subject %d: %w", k+1, err)
		}
		if sub.Category == "" {
			sub.Category = sub.Word
		}
		if sub.Phrase == "" {
			sub.Phrase = sub.Word
		}
	}
	return nil
}

// resolve makes the subjects' relative paths relative to dir.
func (s *scene) resolve(dir string) {
	join := func(p string) string {
		if p == "" || p == noMask || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for k := range s.Subjects {
		sub := &s.Subjects[k]
		for i := range sub.Refs {
			sub.Refs[i] = join(sub.Refs[i])
		}
		for i := range sub.Masks {
			sub.Masks[i] = join(sub.Masks[i])
		}
	}
}

// unwrapPathError is the reason alone of an *os.PathError, for messages
// that name the path already.
func unwrapPathError(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
