package clip

import (
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// basicTokenizerText reproduces the text cleaning transformers' slow
// CLIPTokenizer falls back to when ftfy is not installed:
//
//	" ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text))
//
// That is the path Stable Diffusion pipelines take in a plain install, so the
// ids depend on it: control and format characters vanish (a zero-width joiner
// inside an emoji sequence splits the emoji), CJK ideographs become words of
// their own, and words are lowercased the way Python's str.lower() does it.
//
// Character categories come from Go's Unicode tables; Python's depend on its
// release (3.11 ships Unicode 14.0), so characters assigned in between are
// the one place the two can disagree.
func basicTokenizerText(text string) string {
	var cleaned strings.Builder
	cleaned.Grow(len(text))
	for _, r := range text {
		switch {
		case isDroppedByBasicTokenizer(r):
		case isBasicTokenizerSpace(r):
			cleaned.WriteByte(' ')
		case isCJKIdeograph(r):
			cleaned.WriteByte(' ')
			cleaned.WriteRune(r)
			cleaned.WriteByte(' ')
		default:
			cleaned.WriteRune(r)
		}
	}
	words := strings.Fields(norm.NFC.String(cleaned.String()))
	for i, w := range words {
		words[i] = pythonLower(w)
	}
	return strings.Join(words, " ")
}

// isDroppedByBasicTokenizer is BERT's _clean_text deletion rule: NUL, the
// replacement character (which is also what invalid UTF-8 decodes to) and
// every category C* character (Go's C table includes unassigned code points,
// like Python's Cn) except the three whitespace controls.
func isDroppedByBasicTokenizer(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	return r == 0 || r == unicode.ReplacementChar || unicode.In(r, unicode.C)
}

// isBasicTokenizerSpace is BERT's _is_whitespace: narrower than
// unicode.IsSpace, so line and paragraph separators survive cleaning (the
// later whitespace split still breaks words at them, as Python's str.split does).
func isBasicTokenizerSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || unicode.Is(unicode.Zs, r)
}

// cjkIdeographs are the CJK Unified Ideograph blocks BERT's _is_chinese_char
// lists. Kana and Hangul are deliberately absent: they stay glued to their
// neighbours.
var cjkIdeographs = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x3400, Hi: 0x4DBF, Stride: 1},
		{Lo: 0x4E00, Hi: 0x9FFF, Stride: 1},
		{Lo: 0xF900, Hi: 0xFAFF, Stride: 1},
	},
	R32: []unicode.Range32{
		{Lo: 0x20000, Hi: 0x2A6DF, Stride: 1},
		{Lo: 0x2A700, Hi: 0x2B73F, Stride: 1},
		{Lo: 0x2B740, Hi: 0x2B81F, Stride: 1},
		{Lo: 0x2B820, Hi: 0x2CEAF, Stride: 1},
		{Lo: 0x2F800, Hi: 0x2FA1F, Stride: 1},
	},
}

func isCJKIdeograph(r rune) bool { return unicode.Is(cjkIdeographs, r) }

// The letters whose Python lowercase is not Go's simple case mapping, and
// what they become.
const (
	capitalIWithDot   = 'İ'      // U+0130
	combiningDotAbove = '\u0307' // follows "i" in U+0130's full lowercase
	capitalSigma      = 'Σ'
	smallSigma        = 'σ'
	smallFinalSigma   = 'ς'
)

// pythonLower is Python's str.lower(): the full Unicode lowercase mapping.
// It differs from strings.ToLower in exactly the two places SpecialCasing.txt
// makes it: U+0130 lowercases to two code points, and capital sigma becomes
// final sigma at the end of a word.
func pythonLower(word string) string {
	runes := []rune(word)
	var lower strings.Builder
	lower.Grow(len(word) + 1)
	for i, r := range runes {
		switch r {
		case capitalIWithDot:
			lower.WriteRune('i')
			lower.WriteRune(combiningDotAbove)
		case capitalSigma:
			if isFinalSigma(runes, i) {
				lower.WriteRune(smallFinalSigma)
			} else {
				lower.WriteRune(smallSigma)
			}
		default:
			lower.WriteRune(unicode.ToLower(r))
		}
	}
	return lower.String()
}

// isFinalSigma is the Final_Sigma casing context, as CPython implements it:
// a cased letter before the sigma and none after it, looking past
// case-ignorable characters (accents, apostrophes, ...) both ways.
func isFinalSigma(runes []rune, at int) bool {
	before := at - 1
	for before >= 0 && isCaseIgnorable(runes[before]) {
		before--
	}
	if before < 0 || !isCased(runes[before]) {
		return false
	}
	after := at + 1
	for after < len(runes) && isCaseIgnorable(runes[after]) {
		after++
	}
	return after == len(runes) || !isCased(runes[after])
}

// isCased is the derived property Cased.
func isCased(r rune) bool {
	return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// wordBreakMidLetterOrQuote holds the Word_Break MidLetter, MidNumLet and
// Single_Quote characters, which Go's unicode package has no table for but
// the derived property Case_Ignorable includes.
var wordBreakMidLetterOrQuote = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x0027, Hi: 0x0027, Stride: 1}, // '
		{Lo: 0x002E, Hi: 0x002E, Stride: 1}, // .
		{Lo: 0x003A, Hi: 0x003A, Stride: 1}, // :
		{Lo: 0x00B7, Hi: 0x00B7, Stride: 1},
		{Lo: 0x0387, Hi: 0x0387, Stride: 1},
		{Lo: 0x055F, Hi: 0x055F, Stride: 1},
		{Lo: 0x05F4, Hi: 0x05F4, Stride: 1},
		{Lo: 0x2018, Hi: 0x2019, Stride: 1},
		{Lo: 0x2024, Hi: 0x2024, Stride: 1},
		{Lo: 0x2027, Hi: 0x2027, Stride: 1},
		{Lo: 0xFE13, Hi: 0xFE13, Stride: 1},
		{Lo: 0xFE52, Hi: 0xFE52, Stride: 1},
		{Lo: 0xFE55, Hi: 0xFE55, Stride: 1},
		{Lo: 0xFF07, Hi: 0xFF07, Stride: 1},
		{Lo: 0xFF0E, Hi: 0xFF0E, Stride: 1},
		{Lo: 0xFF1A, Hi: 0xFF1A, Stride: 1},
	},
	LatinOffset: 4,
}

// isCaseIgnorable is the derived property Case_Ignorable.
func isCaseIgnorable(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk, wordBreakMidLetterOrQuote)
}
