package guidance

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lcpdiff/lcpdiff/internal/model/clip"
)

// TokenPositions finds words (one or more) in the tokenised prompt and
// returns their token positions, counting the start token as 0: the
// positions of the words' own tokens (tokenised alone, without start and
// end tokens) where they first occur in the prompt's 77 ids. When they do
// not occur, the error lists the prompt's words with their positions.
func TokenPositions(tok *clip.Tokenizer, prompt, words string) ([]int64, error) {
	want := tok.Encode(words)
	want = want[1 : len(want)-1] // without start and end
	if len(want) == 0 {
		return nil, fmt.Errorf("subject words %q have no tokens", words)
	}
	ids, _ := tok.EncodePadded(prompt)
	for at := range len(ids) - len(want) + 1 {
		if slices.Equal(ids[at:at+len(want)], want) {
			pos := make([]int64, len(want))
			for k := range pos {
				pos[k] = int64(at + k)
			}
			return pos, nil
		}
	}
	return nil, fmt.Errorf("subject words %q are not among the prompt's tokens: %s", words, promptTokens(tok, prompt))
}

// promptTokens lists the prompt's words with their token positions, as
// "a@1 dog@2 grassland@8-9". CLIP tokenises whitespace-separated words
// independently, so the words' tokens add up to the prompt's; if they do
// not (exotic whitespace), the ids themselves are listed.
func promptTokens(tok *clip.Tokenizer, prompt string) string {
	ids := tok.Encode(prompt)
	ids = ids[1 : len(ids)-1]
	var list []string
	pos := 1 // after the start token
	for _, word := range strings.Fields(prompt) {
		n := len(tok.Encode(word)) - 2
		if n <= 0 {
			continue
		}
		span := fmt.Sprint(pos)
		if n > 1 {
			span = fmt.Sprintf("%d-%d", pos, pos+n-1)
		}
		list = append(list, word+"@"+span)
		pos += n
	}
	if pos-1 != len(ids) {
		return fmt.Sprintf("ids %v from position 1", ids)
	}
	if room := tok.MaxLength - 2; len(ids) > room {
		return strings.Join(list, " ") + fmt.Sprintf(" (truncated after position %d)", room)
	}
	return strings.Join(list, " ")
}
