package eval

import (
	"path/filepath"

	"github.com/lcpdiff/lcpdiff/internal/atomicfile"
)

// WriteReports writes a finished run's outputs into out, each atomically:
// the contact sheets, summary.json, summary.md and subjects.md.
func WriteReports(out string, sum *Summary, items []Item, recs map[string]*Record) error {
	sheets, err := writeContactSheets(out, sum, items, recs)
	if err != nil {
		return err
	}
	sum.ContactSheets = sheets
	if err := writeJSONAtomic(filepath.Join(out, SummaryFile), sum); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(out, SummaryMarkdownFile), []byte(SummaryMarkdown(sum))); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(out, SubjectsMarkdownFile), []byte(SubjectsMarkdown(sum)))
}
