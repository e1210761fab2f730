package clip

import (
	"regexp"
	"strings"
)

// Tokenizer turns prompts into CLIP token ids exactly as Stable Diffusion
// pipelines get them from transformers' slow CLIPTokenizer without ftfy
// installed (see basicTokenizerText for what that fallback does).
//
// It is immutable once loaded, so goroutines may share one. It keeps no BPE
// cache, unlike the reference: a 20-word prompt takes about 50µs uncached,
// nothing beside a denoising step, and no cache means no lock and no growth.
type Tokenizer struct {
	// BOS and EOS frame every encoded prompt; Pad fills EncodePadded's tail.
	BOS, EOS, Pad int64
	// MaxLength is the text encoder's context: EncodePadded's length,
	// BOS and EOS included.
	MaxLength int

	vocab    map[string]int64
	unknown  int64 // the id of BPE pieces missing from vocab
	ranks    map[symbolPair]int
	specials []specialToken
}

// specialToken is a token matched verbatim in the raw prompt, before any
// cleaning, the way transformers' added-token trie splits them out.
type specialToken struct {
	text string
	id   int64
}

// Encode returns the prompt's ids framed by BOS and EOS, untruncated: what
// transformers returns with padding="longest" for a single prompt, and what
// pipelines compare against to warn about truncation.
func (t *Tokenizer) Encode(text string) []int64 {
	ids := append([]int64{t.BOS}, t.tokenIDs(text)...)
	return append(ids, t.EOS)
}

// EncodePadded returns exactly MaxLength ids, as with padding="max_length",
// truncation=True: BOS, at most MaxLength-2 tokens, EOS, then Pad. truncated
// reports whether tokens had to be dropped to fit.
func (t *Tokenizer) EncodePadded(text string) (ids []int64, truncated bool) {
	tokens := t.tokenIDs(text)
	if room := t.MaxLength - 2; len(tokens) > room {
		tokens, truncated = tokens[:room], true
	}
	ids = make([]int64, 0, t.MaxLength)
	ids = append(ids, t.BOS)
	ids = append(ids, tokens...)
	ids = append(ids, t.EOS)
	for len(ids) < t.MaxLength {
		ids = append(ids, t.Pad)
	}
	return ids, truncated
}

// tokenIDs is the prompt's ids without BOS and EOS.
func (t *Tokenizer) tokenIDs(text string) []int64 {
	var ids []int64
	for text != "" {
		before, special, after, found := t.cutSpecial(text)
		ids = t.appendTextIDs(ids, before)
		if !found {
			break
		}
		ids = append(ids, special.id)
		text = after
	}
	return ids
}

// cutSpecial finds the first special token in text, the longest one where
// several start at the same place, and splits text around it.
func (t *Tokenizer) cutSpecial(text string) (before string, special specialToken, after string, found bool) {
	first := -1
	for _, s := range t.specials {
		i := strings.Index(text, s.text)
		if i < 0 {
			continue
		}
		if first < 0 || i < first || (i == first && len(s.text) > len(special.text)) {
			first, special = i, s
		}
	}
	if first < 0 {
		return text, specialToken{}, "", false
	}
	return text[:first], special, text[first+len(special.text):], true
}

// clipWordPattern is CLIPTokenizer's pre-tokenization regex (compiled with
// IGNORECASE there too). After basicTokenizerText the only whitespace left is
// the ASCII space, so Go's ASCII-only \s means the same as Python's.
var clipWordPattern = regexp.MustCompile(
	`(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`)

// The two literals clipWordPattern matches whole. They reach the vocabulary
// unsplit, because CLIPTokenizer seeds its BPE cache with them. Split out
// before cleaning, they still turn up here as e.g. "<|ENDOFTEXT|>" lowercased.
const (
	startOfTextLiteral = "<|startoftext|>"
	endOfTextLiteral   = "<|endoftext|>"
)

// appendTextIDs appends the ids of text that holds no special token.
func (t *Tokenizer) appendTextIDs(ids []int64, text string) []int64 {
	if text == "" {
		return ids
	}
	for _, word := range clipWordPattern.FindAllString(basicTokenizerText(text), -1) {
		ids = t.appendWordIDs(ids, word)
	}
	return ids
}

// appendWordIDs appends the ids of one pre-tokenized word.
func (t *Tokenizer) appendWordIDs(ids []int64, word string) []int64 {
	if word == startOfTextLiteral || word == endOfTextLiteral {
		return append(ids, t.id(word))
	}
	for _, symbol := range bpeSymbols(word, t.ranks) {
		ids = append(ids, t.id(symbol))
	}
	return ids
}

// id looks a BPE piece up, falling back to the unknown token like
// CLIPTokenizer._convert_token_to_id.
func (t *Tokenizer) id(piece string) int64 {
	if id, ok := t.vocab[piece]; ok {
		return id
	}
	return t.unknown
}
