package toymodel

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// The special tokens of CLIP's tokenizer, last in its vocabulary.
const (
	startOfText = "<|startoftext|>"
	endOfText   = "<|endoftext|>"
	endOfWord   = "</w>"
)

// Vocabulary is a CLIP-format byte-level BPE tokenizer for a word list:
// CLIP's 256 byte symbols, the same with "</w>" appended, the symbols the
// merges make, then the two special tokens, in that order, as CLIP's own
// vocabulary is laid out.
type Vocabulary struct {
	Tokens []string // by id
	Merges [][2]string
}

// BOS and EOS are the ids of the special tokens.
func (v *Vocabulary) BOS() int64 { return int64(len(v.Tokens) - 2) }
func (v *Vocabulary) EOS() int64 { return int64(len(v.Tokens) - 1) }

// byteSymbols is CLIP's bytes_to_unicode: the symbol standing for each
// byte, and the symbols in the dictionary's order, which the vocabulary
// keeps. Printable Latin-1 bytes stand for themselves and come first; the
// other bytes, in byte order, stand for U+0100 onwards.
func byteSymbols() (ofByte [256]string, order []string) {
	printable := func(b int) bool {
		return ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
	}
	for b := range 256 {
		if printable(b) {
			ofByte[b] = string(rune(b))
			order = append(order, ofByte[b])
		}
	}
	shifted := rune(256)
	for b := range 256 {
		if !printable(b) {
			ofByte[b] = string(shifted)
			order = append(order, ofByte[b])
			shifted++
		}
	}
	return ofByte, order
}

// NewVocabulary builds the tokenizer for words. Each word of two or more
// bytes is built by merges left to right ("s t", "st r", ..., "stripe
// s</w>"), so that it becomes one token; any other text falls back to
// byte symbols, all of which are in the vocabulary.
//
// CLIP's BPE applies, at every step, the lowest-ranked merge among the
// adjacent pairs of a word, so the ranks decide whether another word's
// merge cuts into this one ("o n</w>" of "on" inside a word ending in
// "on"). The order that keeps every word whole: first all merges that
// extend a multi-byte prefix (only the word's own prefix exists to extend,
// once its first merge has happened), then the first merges, each before
// every other first merge that matches a later pair of its word. A word
// list whose first merges cannot be so ordered is an error.
func NewVocabulary(words []string) (*Vocabulary, error) {
	symbolOf, bytesym := byteSymbols()
	type chain struct {
		word   string
		pairs  [][2]string // the word's byte symbols as adjacent pairs, "</w>" on the last
		merges [][2]string // its left-to-right merges
	}
	var chains []chain
	seen := map[string]bool{}
	for _, w := range words {
		if err := checkWord(w); err != nil {
			return nil, err
		}
		if seen[w] {
			return nil, fmt.Errorf("tokenizer: word %q is listed twice", w)
		}
		seen[w] = true
		syms := make([]string, len(w))
		for i := range len(w) {
			syms[i] = symbolOf[w[i]]
		}
		syms[len(syms)-1] += endOfWord
		c := chain{word: w}
		for i := 0; i+1 < len(syms); i++ {
			c.pairs = append(c.pairs, [2]string{syms[i], syms[i+1]})
		}
		prefix := syms[0]
		for _, s := range syms[1:] {
			c.merges = append(c.merges, [2]string{prefix, s})
			prefix += s
		}
		chains = append(chains, c)
	}

	var merges [][2]string
	have := map[[2]string]bool{}
	add := func(m [2]string) {
		if !have[m] {
			have[m] = true
			merges = append(merges, m)
		}
	}
	for _, c := range chains {
		for _, m := range c.merges[min(1, len(c.merges)):] {
			add(m)
		}
	}
	firsts, err := orderFirstMerges(func(yield func(word string, first [2]string, pairs [][2]string)) {
		for _, c := range chains {
			if len(c.merges) > 0 {
				yield(c.word, c.merges[0], c.pairs)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for _, m := range firsts {
		add(m)
	}

	v := &Vocabulary{Merges: merges}
	v.Tokens = append(v.Tokens, bytesym...)
	for _, s := range bytesym {
		v.Tokens = append(v.Tokens, s+endOfWord)
	}
	for _, m := range merges {
		v.Tokens = append(v.Tokens, m[0]+m[1])
	}
	v.Tokens = append(v.Tokens, startOfText, endOfText)
	return v, nil
}

// checkWord refuses what CLIP's pre-tokenizer would split or change: a
// word must be lowercase letters only.
func checkWord(w string) error {
	if w == "" {
		return fmt.Errorf("tokenizer: an empty word")
	}
	for _, r := range w {
		if r < 'a' || r > 'z' {
			return fmt.Errorf("tokenizer: word %q: only lowercase a-z (CLIP lowercases and splits at anything else)", w)
		}
	}
	return nil
}

// orderFirstMerges ranks the words' first merges so that each comes before
// every other first merge matching a later pair of its own word
// (topologically, keeping list order where free).
func orderFirstMerges(each func(yield func(word string, first [2]string, pairs [][2]string))) ([][2]string, error) {
	var order [][2]string
	index := map[[2]string]int{}
	var pairsOf [][][2]string
	var wordOf []string
	each(func(word string, first [2]string, pairs [][2]string) {
		i, ok := index[first]
		if !ok {
			i = len(order)
			index[first] = i
			order = append(order, first)
			pairsOf = append(pairsOf, nil)
			wordOf = append(wordOf, word)
		}
		pairsOf[i] = append(pairsOf[i], pairs[1:]...)
	})
	n := len(order)
	after := make([][]int, n) // after[i]: merges that must rank after i
	blockers := make([]int, n)
	for i := range n {
		for _, p := range pairsOf[i] {
			if j, ok := index[p]; ok && j != i {
				after[i] = append(after[i], j)
				blockers[j]++
			}
		}
	}
	var ranked [][2]string
	done := make([]bool, n)
	for len(ranked) < n {
		next := -1
		for i := range n {
			if !done[i] && blockers[i] == 0 {
				next = i
				break
			}
		}
		if next < 0 {
			var stuck []string
			for i := range n {
				if !done[i] {
					stuck = append(stuck, wordOf[i])
				}
			}
			return nil, fmt.Errorf("tokenizer: words %s cut into each other whatever the merge order", strings.Join(stuck, ", "))
		}
		done[next] = true
		ranked = append(ranked, order[next])
		for _, j := range after[next] {
			blockers[j]--
		}
	}
	return ranked, nil
}

// tokenizerFiles are the files of a transformers CLIPTokenizer folder.
func (v *Vocabulary) tokenizerFiles(maxLength int) (map[string][]byte, error) {
	ids := make(map[string]int, len(v.Tokens))
	for i, t := range v.Tokens {
		if _, dup := ids[t]; dup {
			return nil, fmt.Errorf("tokenizer: token %q twice in the vocabulary", t)
		}
		ids[t] = i
	}
	vocab, err := marshalJSON(ids) // sorted keys, as transformers writes it
	if err != nil {
		return nil, err
	}
	var merges bytes.Buffer
	merges.WriteString("#version: 0.2\n")
	for _, m := range v.Merges {
		merges.WriteString(m[0] + " " + m[1] + "\n")
	}
	added := func(content string) map[string]any {
		return map[string]any{"content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": true}
	}
	special := map[string]any{
		"bos_token": added(startOfText), "eos_token": added(endOfText),
		"unk_token": added(endOfText), "pad_token": endOfText,
	}
	cfg := map[string]any{
		"bos_token": added(startOfText), "eos_token": added(endOfText),
		"unk_token": added(endOfText), "pad_token": endOfText,
		"errors": "replace", "add_prefix_space": false, "do_lower_case": true,
		"model_max_length": maxLength, "tokenizer_class": "CLIPTokenizer",
		"clean_up_tokenization_spaces": true,
	}
	files := map[string][]byte{"vocab.json": vocab, "merges.txt": merges.Bytes()}
	for name, obj := range map[string]any{"special_tokens_map.json": special, "tokenizer_config.json": cfg} {
		if files[name], err = marshalJSON(obj); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// marshalJSON is indented JSON with keys sorted and "<", ">" and "&" left
// as they are (transformers writes them so; Go would escape them).
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
