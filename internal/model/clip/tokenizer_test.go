package clip

import (
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lcpdiff/lcpdiff/internal/golden"
)

// goldenTokenizerCase is one prompt of core/tokenizer.json, encoded by
// transformers' slow CLIPTokenizer without ftfy.
type goldenTokenizerCase struct {
	Prompt         string   `json:"prompt"`
	InputIDs       []int64  `json:"input_ids"`
	UntruncatedIDs []int64  `json:"untruncated_ids"`
	Truncated      bool     `json:"truncated"`
	BPETokens      []string `json:"bpe_tokens"`
}

func loadGoldenTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := LoadTokenizer(golden.Path(t, "tiny-sd", "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenizerGoldenCases(t *testing.T) {
	tok := loadGoldenTokenizer(t)
	data, err := os.ReadFile(golden.Path(t, "core", "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var reference struct {
		SpecialIDs struct {
			BOS            int64 `json:"bos"`
			EOS            int64 `json:"eos"`
			Pad            int64 `json:"pad"`
			ModelMaxLength int   `json:"model_max_length"`
		} `json:"special_ids"`
		Cases []goldenTokenizerCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &reference); err != nil {
		t.Fatal(err)
	}
	want := reference.SpecialIDs
	if tok.BOS != want.BOS || tok.EOS != want.EOS || tok.Pad != want.Pad || tok.MaxLength != want.ModelMaxLength {
		t.Fatalf("BOS/EOS/Pad/MaxLength = %d/%d/%d/%d, want %d/%d/%d/%d",
			tok.BOS, tok.EOS, tok.Pad, tok.MaxLength, want.BOS, want.EOS, want.Pad, want.ModelMaxLength)
	}
	if len(reference.Cases) == 0 {
		t.Fatal("no cases in core/tokenizer.json")
	}

	passed := 0
	for _, c := range reference.Cases {
		ok := true
		if got := tok.Encode(c.Prompt); !slices.Equal(got, c.UntruncatedIDs) {
			t.Errorf("Encode(%q)\n got %v\nwant %v (BPE pieces %q)", c.Prompt, got, c.UntruncatedIDs, c.BPETokens)
			ok = false
		}
		got, truncated := tok.EncodePadded(c.Prompt)
		if !slices.Equal(got, c.InputIDs) {
			t.Errorf("EncodePadded(%q)\n got %v\nwant %v", c.Prompt, got, c.InputIDs)
			ok = false
		}
		if truncated != c.Truncated {
			t.Errorf("EncodePadded(%q) truncated = %v, want %v", c.Prompt, truncated, c.Truncated)
			ok = false
		}
		if ok {
			passed++
		}
	}
	t.Logf("%d of %d golden tokenizer cases match", passed, len(reference.Cases))
}

func TestTokenizerPythonLower(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"İstanbul", "i\u0307stanbul"},
		{"ΟΔΟΣ", "οδος"},     // final sigma at the end of a word
		{"ΣΟΦΙΑ", "σοφια"},   // not final: nothing cased before it
		{"ΟΔΟΣΣ", "οδοσς"},   // only the last one is final
		{"ΟΔΟΣ'", "οδος'"},   // an apostrophe is case-ignorable
		{"ΟΔΟΣ'Α", "οδοσ'α"}, // ... so it does not end the word
		{"Σ", "σ"},           // a lone sigma has nothing cased before it
		{"ǅemal", "ǆemal"},   // titlecase letters lowercase too
		{"STRAẞE", "straße"},
	} {
		if got := pythonLower(c.in); got != c.want {
			t.Errorf("pythonLower(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTokenizerBasicCleaning(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\u2028b", "a b"},          // line separator: kept by cleaning, split on by str.split
		{"x\uE000y", "xy"},           // private use (Co) is deleted
		{"x\U000E0001y", "xy"},       // language tag (Cf) is deleted
		{"\xffbad utf8", "bad utf8"}, // invalid UTF-8 decodes to U+FFFD, which is deleted
		{"漢字かな", "漢 字 かな"},           // ideographs split, kana does not
		{"e\u0301", "\u00e9"},        // NFC
		{"  A\tB\r\nC  ", "a b c"},
	} {
		if got := basicTokenizerText(c.in); got != c.want {
			t.Errorf("basicTokenizerText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestTokenizerUppercaseSpecialLiteral(t *testing.T) {
	// Not split out as a special token (the match is case-sensitive), but
	// lowercased and then matched whole by CLIP's word pattern.
	tok := loadGoldenTokenizer(t)
	got := tok.Encode("a <|ENDOFTEXT|> b")
	want := tok.Encode("a <|endoftext|> b")
	if !slices.Equal(got, want) {
		t.Errorf("Encode with uppercase literal = %v, want %v", got, want)
	}
}

// tokenizerDir writes files into a temporary tokenizer directory, with the
// golden vocabulary and merges unless files replaces them; the content "-"
// leaves a file out.
func tokenizerDir(t *testing.T, files map[string]string) string {
	t.Helper()
	src := golden.Path(t, "tiny-sd", "tokenizer")
	dir := t.TempDir()
	for _, name := range []string{vocabFile, mergesFile} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = cmp.Or(files[name], string(data))
	}
	for name, content := range files {
		if content == "-" {
			continue // "-" leaves the file out
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTokenizerDefaultsWithoutConfigFiles(t *testing.T) {
	tok, err := LoadTokenizer(tokenizerDir(t, map[string]string{}))
	if err != nil {
		t.Fatal(err)
	}
	if tok.BOS != 49406 || tok.EOS != 49407 || tok.Pad != 49407 || tok.MaxLength != 77 {
		t.Errorf("defaults: BOS/EOS/Pad/MaxLength = %d/%d/%d/%d, want 49406/49407/49407/77", tok.BOS, tok.EOS, tok.Pad, tok.MaxLength)
	}
}

func TestTokenizerExclamationPad(t *testing.T) {
	// SD2 tokenizers pad with "!". It is read from the files, the special
	// tokens map wins over tokenizer_config.json, and, being a special token,
	// each "!" is split out of the prompt on its own.
	dir := tokenizerDir(t, map[string]string{
		tokenizerConfigFile:  `{"pad_token": "<|endoftext|>", "model_max_length": 1000000000000000019884624838656}`,
		specialTokensMapFile: `{"pad_token": {"content": "!", "lstrip": false}}`,
	})
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	exclamation := tok.vocab["!"]
	if tok.Pad != exclamation || tok.MaxLength != 77 {
		t.Fatalf("Pad/MaxLength = %d/%d, want %d/77", tok.Pad, tok.MaxLength, exclamation)
	}
	ids, _ := tok.EncodePadded("wow!!")
	want := []int64{tok.BOS, tok.vocab["wow</w>"], exclamation, exclamation, tok.EOS}
	if !slices.Equal(ids[:len(want)], want) || ids[len(ids)-1] != exclamation {
		t.Errorf("EncodePadded(\"wow!!\") = %v, want %v then pads of %d", ids, want, exclamation)
	}
}

func TestTokenizerMaxLengthFromConfig(t *testing.T) {
	tok, err := LoadTokenizer(tokenizerDir(t, map[string]string{tokenizerConfigFile: `{"model_max_length": 8}`}))
	if err != nil {
		t.Fatal(err)
	}
	ids, truncated := tok.EncodePadded("one two three four five six seven")
	if len(ids) != 8 || !truncated || ids[7] != tok.EOS {
		t.Errorf("EncodePadded with MaxLength 8 = %v (truncated %v), want 8 ids ending in EOS, truncated", ids, truncated)
	}
	if ids, truncated := tok.EncodePadded("one two three four five six"); len(ids) != 8 || truncated {
		t.Errorf("six tokens in 8 positions = %v (truncated %v), want no truncation", ids, truncated)
	}
}

func TestTokenizerLoadErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nowhere")
	for _, c := range []struct {
		name string
		dir  string
		want string // in the error, with the directory replaced by DIR
	}{
		{"missing directory", missing, "nowhere/vocab.json"},
		{"missing merges", tokenizerDir(t, map[string]string{mergesFile: "-"}), "merges.txt"},
		{"bad vocab JSON", tokenizerDir(t, map[string]string{vocabFile: `{"a": `}), "vocab.json"},
		{"bad config JSON", tokenizerDir(t, map[string]string{tokenizerConfigFile: `[`}), "tokenizer_config.json"},
		{"malformed merge", tokenizerDir(t, map[string]string{mergesFile: "#version: 0.2\ni n\nt h e\n"}), "merges.txt:3"},
		{"pad not in vocab", tokenizerDir(t, map[string]string{specialTokensMapFile: `{"pad_token": "<pad>"}`}), `pad_token "<pad>" is not in`},
		{"bad token entry", tokenizerDir(t, map[string]string{specialTokensMapFile: `{"bos_token": 3}`}), "special_tokens_map.json: bos_token"},
		{"bad max length", tokenizerDir(t, map[string]string{tokenizerConfigFile: `{"model_max_length": 1}`}), "model_max_length"},
	} {
		_, err := LoadTokenizer(c.dir)
		if err == nil {
			t.Errorf("%s: LoadTokenizer succeeded, want an error", c.name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q, want one line containing %q", c.name, msg, c.want)
		}
	}
}

func BenchmarkTokenize(b *testing.B) {
	tok := loadGoldenTokenizer(b)
	const prompt = "a highly detailed matte painting of a futuristic city at sunset, " +
		"towering glass skyscrapers, flying cars, trending on artstation, 8k"
	b.ReportAllocs()
	for b.Loop() {
		tok.EncodePadded(prompt)
	}
}
