package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLayoutYAMLAndJSON(t *testing.T) {
	dir := t.TempDir()
	yamlPath := filepath.Join(dir, "scene.yaml")
	writeFile(t, yamlPath, `prompt: a dog and a cat
negative_prompt: blurry
subjects:
  - refs: [dog.jpg, /abs/dog2.jpg]
    masks: [null, masks/dog.png]
    box: [0, 0.25, 0.5, 1]
    word: dog
  - refs: [cat.jpg]
    box: [0.5, 0, 1, 0.5]
    word: cat
    category: kitten
    phrase: a grey cat
`)
	jsonPath := filepath.Join(dir, "scene.json")
	// Tab indentation, which YAML parsers refuse, is common in JSON files.
	writeFile(t, jsonPath, "{\n\t\"prompt\": \"a dog and a cat\",\n\t\"negative_prompt\": \"blurry\",\n\t\"subjects\": [\n"+
		"\t\t{\"refs\": [\"dog.jpg\", \"/abs/dog2.jpg\"], \"masks\": [null, \"masks/dog.png\"], \"box\": [0, 0.25, 0.5, 1], \"word\": \"dog\"},\n"+
		"\t\t{\"refs\": [\"cat.jpg\"], \"box\": [0.5, 0, 1, 0.5], \"word\": \"cat\", \"category\": \"kitten\", \"phrase\": \"a grey cat\"}\n\t]\n}\n")
	want := scene{
		Prompt: "a dog and a cat", NegativePrompt: "blurry",
		Subjects: []subjectSpec{
			{Refs: []string{filepath.Join(dir, "dog.jpg"), "/abs/dog2.jpg"}, Masks: maskPaths{"", filepath.Join(dir, "masks", "dog.png")},
				Box: []float64{0, 0.25, 0.5, 1}, Word: "dog", Category: "dog", Phrase: "dog"},
			{Refs: []string{filepath.Join(dir, "cat.jpg")}, Box: []float64{0.5, 0, 1, 0.5}, Word: "cat", Category: "kitten", Phrase: "a grey cat"},
		},
	}
	for _, path := range []string{yamlPath, jsonPath} {
		got, err := readLayout(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", path, got, want)
		}
	}
}

func TestLayoutErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, text, want string
	}{
		{"empty.yaml", "# nothing yet\n", "empty"},
		{"empty.json", "", "empty"},
		{"nosubjects.yaml", "prompt: a dog\n", "no subjects"},
		{"typo.yaml", "prompt: x\nsubjects:\n  - refs: [a.jpg]\n    boxes: [0, 0, 1, 1]\n    word: x\n", "field boxes not found"},
		{"typo.json", `{"promt": "x"}`, `unknown field "promt"`},
		{"nobox.yaml", "subjects: [{refs: [a.jpg], word: x}]", "subject 1: box [] has 0 numbers"},
		{"norefs.yaml", "subjects: [{box: [0, 0, 1, 1], word: x}]", "subject 1: no reference image"},
		{"noword.yaml", "subjects: [{refs: [a.jpg], box: [0, 0, 1, 1]}]", "subject 1: no word"},
		{"masks.yaml", "subjects: [{refs: [a.jpg], masks: [a.png, b.png], box: [0, 0, 1, 1], word: x}]", "2 masks for 1 reference"},
		{"flipped.yaml", "subjects: [{refs: [a.jpg], box: [0, 0, 1, 1], word: x}, {refs: [a.jpg], box: [0, 0.5, 1, 0.2], word: y}]", "subject 2: box [0 0.5 1 0.2] is empty"},
	} {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readLayout(path)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line containing %q", c.name, err, c.want)
		}
	}
}
