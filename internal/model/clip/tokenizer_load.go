package clip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// The files of a Hugging Face CLIP tokenizer directory. Only the vocabulary
// and the merges are required; the other two override defaults.
const (
	vocabFile            = "vocab.json"
	mergesFile           = "merges.txt"
	specialTokensMapFile = "special_tokens_map.json"
	tokenizerConfigFile  = "tokenizer_config.json"
)

// CLIPTokenizer's constructor defaults, used where the files name nothing.
const (
	defaultBOS       = "<|startoftext|>"
	defaultEOS       = "<|endoftext|>"
	defaultMaxLength = 77
)

// maxMerges is how many merge rules CLIPTokenizer reads: it slices the file
// to the 49152-entry vocabulary minus 256 byte symbols and 2 special tokens,
// ignoring any further lines.
const maxMerges = 49152 - 256 - 2

// LoadTokenizer reads a tokenizer directory as saved by transformers
// (e.g. a Stable Diffusion checkpoint's tokenizer/ folder).
func LoadTokenizer(dir string) (*Tokenizer, error) {
	vocab, err := readVocab(filepath.Join(dir, vocabFile))
	if err != nil {
		return nil, err
	}
	ranks, err := readMerges(filepath.Join(dir, mergesFile))
	if err != nil {
		return nil, err
	}
	settings, err := readSettings(dir)
	if err != nil {
		return nil, err
	}

	t := &Tokenizer{MaxLength: settings.maxLength, vocab: vocab, ranks: ranks}
	fields := []struct {
		role, token string
		id          *int64
	}{
		{"bos_token", settings.bos, &t.BOS},
		{"eos_token", settings.eos, &t.EOS},
		{"pad_token", settings.pad, &t.Pad},
		{"unk_token", settings.unk, &t.unknown},
	}
	for _, f := range fields {
		id, ok := vocab[f.token]
		if !ok {
			return nil, fmt.Errorf("clip tokenizer: %s %q is not in %s", f.role, f.token, filepath.Join(dir, vocabFile))
		}
		*f.id = id
		t.addSpecial(specialToken{f.token, id})
	}
	return t, nil
}

// addSpecial registers a token to split out of raw prompts. transformers does
// this for every special token, pad and unk included: an SD2 tokenizer whose
// pad token is "!" therefore encodes each "!" on its own.
func (t *Tokenizer) addSpecial(s specialToken) {
	for _, known := range t.specials {
		if known.text == s.text {
			return
		}
	}
	t.specials = append(t.specials, s)
}

func readVocab(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	var vocab map[string]int64
	if err := json.Unmarshal(data, &vocab); err != nil {
		return nil, fmt.Errorf("clip tokenizer: %s: %w", path, err)
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("clip tokenizer: %s: empty vocabulary", path)
	}
	return vocab, nil
}

// readMerges ranks merge rules by their line order. Like CLIPTokenizer it
// always drops the first line, the "#version" header.
func readMerges(path string) (map[symbolPair]int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("clip tokenizer: %s: no merge rules", path)
	}
	rules := lines[1:min(len(lines), maxMerges+1)]
	ranks := make(map[symbolPair]int, len(rules))
	for rank, line := range rules {
		pair := strings.Fields(line)
		if len(pair) != 2 {
			return nil, fmt.Errorf("clip tokenizer: %s:%d: want two symbols, got %q", path, rank+2, line)
		}
		ranks[symbolPair{pair[0], pair[1]}] = rank
	}
	return ranks, nil
}

// tokenizerSettings is what the optional JSON files configure.
type tokenizerSettings struct {
	bos, eos, pad, unk string
	maxLength          int
}

// readSettings applies tokenizer_config.json, then special_tokens_map.json
// over it (the precedence of transformers' from_pretrained), to the defaults.
func readSettings(dir string) (tokenizerSettings, error) {
	s := tokenizerSettings{bos: defaultBOS, eos: defaultEOS, pad: defaultEOS, unk: defaultEOS, maxLength: defaultMaxLength}
	for _, name := range []string{tokenizerConfigFile, specialTokensMapFile} {
		path := filepath.Join(dir, name)
		entries, err := readOptionalJSONObject(path)
		if err != nil {
			return s, err
		}
		tokens := []struct {
			key  string
			name *string
		}{{"bos_token", &s.bos}, {"eos_token", &s.eos}, {"pad_token", &s.pad}, {"unk_token", &s.unk}}
		for _, token := range tokens {
			if raw, ok := entries[token.key]; ok {
				if err := decodeTokenName(raw, token.name); err != nil {
					return s, fmt.Errorf("clip tokenizer: %s: %s: %w", path, token.key, err)
				}
			}
		}
		if raw, ok := entries["model_max_length"]; ok {
			if err := decodeMaxLength(raw, &s.maxLength); err != nil {
				return s, fmt.Errorf("clip tokenizer: %s: model_max_length: %w", path, err)
			}
		}
	}
	return s, nil
}

// readOptionalJSONObject returns the top-level entries of a JSON object file,
// or none when the file does not exist.
func readOptionalJSONObject(path string) (map[string]json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("clip tokenizer: %s: %w", path, err)
	}
	return entries, nil
}

// decodeTokenName reads a special token written either as a plain string or
// as a serialized AddedToken ({"content": ..., ...}). null keeps the default.
func decodeTokenName(raw json.RawMessage, name *string) error {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	if err := json.Unmarshal(raw, name); err == nil {
		return nil
	}
	var added struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &added); err != nil || added.Content == nil {
		return fmt.Errorf("want a string or an object with \"content\", got %s", raw)
	}
	*name = *added.Content
	return nil
}

// decodeMaxLength reads model_max_length. transformers writes int(1e30) for
// "no limit"; that and anything else past int32 keeps the default, which is
// the CLIP text encoder's context.
func decodeMaxLength(raw json.RawMessage, maxLength *int) error {
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		return err
	}
	if n > math.MaxInt32 {
		return nil
	}
	if n < 2 || n != math.Trunc(n) {
		return fmt.Errorf("want a whole number of at least 2 (BOS and EOS), got %s", raw)
	}
	*maxLength = int(n)
	return nil
}
