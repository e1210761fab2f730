package toymodel

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/data"
	"github.com/lcpdiff/lcpdiff/internal/model/clip"
)

// writeTokenizer writes the tokenizer for words into a temporary folder and
// loads it with the project's CLIP tokenizer.
func writeTokenizer(t *testing.T, words []string) (*clip.Tokenizer, map[string]int64) {
	t.Helper()
	v, err := NewVocabulary(words)
	if err != nil {
		t.Fatal(err)
	}
	files, err := v.tokenizerFiles(77)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := clip.LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int64
	if err := json.Unmarshal(files["vocab.json"], &vocab); err != nil {
		t.Fatal(err)
	}
	return tok, vocab
}

// pieces splits text as CLIP's pre-tokenizer does for lowercase ASCII.
var pieces = regexp.MustCompile(`\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`)

// wantWholeWords checks that text encodes to one token per word (and per
// punctuation run), each the word's own "</w>" token.
func wantWholeWords(t *testing.T, tok *clip.Tokenizer, vocab map[string]int64, text string) {
	t.Helper()
	want := []int64{tok.BOS}
	for _, p := range pieces.FindAllString(strings.ToLower(text), -1) {
		id, ok := vocab[p+"</w>"]
		if !ok {
			t.Fatalf("%q: %q is not one token of the vocabulary", text, p)
		}
		want = append(want, id)
	}
	want = append(want, tok.EOS)
	if got := tok.Encode(text); !slices.Equal(got, want) {
		t.Fatalf("%q encodes to %v, want whole words %v", text, got, want)
	}
}

func TestToyCaptionsTokeniseIntoWholeWords(t *testing.T) {
	tok, vocab := writeTokenizer(t, ToyWords)
	dir := t.TempDir()
	if _, err := data.WriteToyWorld(dir, data.ToyWorldConfig{Seed: 3, Clips: 12, Images: 12, Size: 32, Frames: 2}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"train.jsonl", "test.jsonl"} {
		m, err := data.LoadManifest(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.Records {
			wantWholeWords(t, tok, vocab, r.Caption)
			for _, s := range r.Subjects {
				wantWholeWords(t, tok, vocab, s.Phrase)
				wantWholeWords(t, tok, vocab, "a photo of a "+s.Category)
			}
		}
	}
	// Every identity's phrase, including those a small world never draws.
	for _, id := range data.ToyIdentities() {
		wantWholeWords(t, tok, vocab, "an "+id.Phrase()+" with the "+id.Texture+" in snow")
	}
}

func TestAnyTextStillTokenises(t *testing.T) {
	tok, vocab := writeTokenizer(t, ToyWords)
	if len(vocab) != 512+countMerges(t)+2 {
		t.Fatalf("vocabulary of %d tokens", len(vocab))
	}
	if tok.BOS != int64(len(vocab)-2) || tok.EOS != int64(len(vocab)-1) || tok.Pad != tok.EOS {
		t.Fatalf("BOS %d EOS %d Pad %d in %d tokens", tok.BOS, tok.EOS, tok.Pad, len(vocab))
	}
	// Unknown words fall back to pieces of the word lists and bytes: none
	// is the unknown token, and "café" keeps its two UTF-8 bytes.
	for _, text := range []string{"a zebra", "strip", "café 42!", "redblue", "sands"} {
		ids := tok.Encode(text)
		for _, id := range ids[1 : len(ids)-1] {
			if id == tok.EOS {
				t.Fatalf("%q: a piece fell back to the unknown token: %v", text, ids)
			}
		}
	}
	if ids := tok.Encode("zebra"); len(ids) != 2+5 || ids[1] != vocab["z"] || ids[5] != vocab["a</w>"] {
		t.Fatalf("zebra: %v", ids)
	}
}

func countMerges(t *testing.T) int {
	v, err := NewVocabulary(ToyWords)
	if err != nil {
		t.Fatal(err)
	}
	return len(v.Merges)
}

func TestMergesBuildWordsLeftToRight(t *testing.T) {
	v, err := NewVocabulary([]string{"star", "a", "on"})
	if err != nil {
		t.Fatal(err)
	}
	// The multi-byte merges first, then each word's first merge.
	want := [][2]string{{"st", "a"}, {"sta", "r</w>"}, {"s", "t"}, {"o", "n</w>"}}
	if !slices.Equal(v.Merges, want) {
		t.Fatalf("merges %v, want %v", v.Merges, want)
	}
	if v.Tokens[0] != "!" || v.Tokens[255] != string(rune(256+67)) || v.Tokens[256] != "!</w>" {
		t.Fatalf("byte symbols out of CLIP's order: %q %q %q", v.Tokens[0], v.Tokens[255], v.Tokens[256])
	}
	if got := v.Tokens[512:]; !slices.Equal(got, []string{"sta", "star</w>", "st", "on</w>", "<|startoftext|>", "<|endoftext|>"}) {
		t.Fatalf("merged tokens %q", got)
	}
	for _, bad := range [][]string{{"Red"}, {"two-tone"}, {"red", "red"}, {""}} {
		if _, err := NewVocabulary(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestFirstMergesAreOrderedAroundEachOther(t *testing.T) {
	// "on" ends "cotton": cotton's whole chain must rank before "o n</w>",
	// whichever word the list names first.
	for _, words := range [][]string{{"on", "cotton"}, {"cotton", "on"}} {
		tok, vocab := writeTokenizer(t, words)
		wantWholeWords(t, tok, vocab, "cotton on cotton")
	}
}
