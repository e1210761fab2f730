package clip

// endOfWord marks a word's last symbol: CLIP's vocabulary tells "cat" at the
// end of a word ("cat</w>") from "cat" inside one.
const endOfWord = "</w>"

// symbolPair is two adjacent BPE symbols, the key a merge rule is ranked by.
type symbolPair struct{ left, right string }

// byteSymbols is GPT-2's bytes_to_unicode table: every byte gets a printable
// stand-in, so BPE can work on strings of visible characters while still
// covering arbitrary UTF-8. Printable Latin-1 bytes stand for themselves; the
// rest are shifted to U+0100 onwards in byte order.
var byteSymbols = func() [256]string {
	var table [256]string
	shifted := rune(256)
	for b := 0; b < 256; b++ {
		printable := ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
		if printable {
			table[b] = string(rune(b))
		} else {
			table[b] = string(shifted)
			shifted++
		}
	}
	return table
}()

// bpeSymbols byte-encodes word and merges its symbols, lowest-ranked pair
// first, until no ranked pair is left: the algorithm of CLIPTokenizer.bpe.
func bpeSymbols(word string, ranks map[symbolPair]int) []string {
	symbols := make([]string, len(word))
	for i := 0; i < len(word); i++ {
		symbols[i] = byteSymbols[word[i]]
	}
	symbols[len(symbols)-1] += endOfWord

	for len(symbols) > 1 {
		best, bestRank := symbolPair{}, -1
		for i := 0; i+1 < len(symbols); i++ {
			pair := symbolPair{symbols[i], symbols[i+1]}
			if rank, ok := ranks[pair]; ok && (bestRank < 0 || rank < bestRank) {
				best, bestRank = pair, rank
			}
		}
		if bestRank < 0 {
			break
		}
		symbols = mergePair(symbols, best)
	}
	return symbols
}

// mergePair joins every occurrence of pair, scanning left to right so that
// in a run like "a a a" the leftmost two merge first, as the reference does.
func mergePair(symbols []string, pair symbolPair) []string {
	merged := symbols[:0]
	for i := 0; i < len(symbols); i++ {
		if i+1 < len(symbols) && symbols[i] == pair.left && symbols[i+1] == pair.right {
			merged = append(merged, pair.left+pair.right)
			i++
			continue
		}
		merged = append(merged, symbols[i])
	}
	return merged
}
