package guidance

import (
	"slices"
	"strings"
	"testing"
)

func TestTokenPositions(t *testing.T) {
	tok := loadTokenizer(t)
	for _, c := range []struct {
		words string
		want  []int64
	}{
		{"dog", []int64{2}},
		{"cat", []int64{5}},
		{"a", []int64{1}},        // the first occurrence
		{"a cat", []int64{4, 5}}, // several words: one run of tokens
		{"Grass", []int64{8}},    // as CLIP lowercases
		{"  on  the ", []int64{6, 7}},
	} {
		got, err := TokenPositions(tok, goldenPrompt, c.words)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("TokenPositions(%q) = %v, %v; want %v", c.words, got, err, c.want)
		}
	}
	_, err := TokenPositions(tok, goldenPrompt, "dogs")
	want := `subject words "dogs" are not among the prompt's tokens: a@1 dog@2 and@3 a@4 cat@5 on@6 the@7 grass@8`
	if err == nil || err.Error() != want {
		t.Errorf("missing word: %v\nwant %s", err, want)
	}
	if _, err := TokenPositions(tok, goldenPrompt, " "); err == nil || err.Error() != `subject words " " have no tokens` {
		t.Errorf("blank words: %v", err)
	}
	// A word split into several BPE pieces lists as a span.
	_, err = TokenPositions(tok, "a xylophonist plays", "cat")
	if err == nil || !strings.Contains(err.Error(), "tokens: a@1 xylophonist@2-") || !strings.Contains(err.Error(), " plays@") {
		t.Errorf("multi-piece word: %v", err)
	}
	t.Log(err)
}
