package eval

import (
	"fmt"
	"slices"
	"strings"
)

// The Markdown tables read like the paper's Tables I-III: CLIP-I, DINO and
// CLIP-T with three decimals, AP / AP50 / AP75 in percent with one, and
// "-" for a value the run did not measure (its notes say why).

// MarkdownTable is one row per run, labelled by its method.
func MarkdownTable(runs []*Summary) string {
	var metrics []string // the bench scorers' columns, first-seen order
	for _, r := range runs {
		for _, m := range r.Metrics {
			if !slices.Contains(metrics, m) {
				metrics = append(metrics, m)
			}
		}
	}
	var b strings.Builder
	head := append([]string{"method", "bench", "images", "CLIP-I", "DINO", "CLIP-T", "AP", "AP50", "AP75"}, metrics...)
	align := append([]string{"---", "---", "--:"}, repeat("--:", len(head)-3)...)
	row(&b, head)
	row(&b, align)
	for _, r := range runs {
		cells := []string{mdCell(r.Method), mdCell(r.Bench), fmt.Sprint(r.Images)}
		row(&b, append(append(cells, scoreCells(r.Scores)...), metricCells(r.Scores, metrics)...))
	}
	return b.String()
}

// scoreCells are the six paper columns of s.
func scoreCells(s Scores) []string {
	return []string{score(s.CLIPI), score(s.DINO), score(s.CLIPT), percent(s.AP), percent(s.AP50), percent(s.AP75)}
}

func metricCells(s Scores, names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "-"
		if v, ok := s.Metrics[n]; ok {
			out[i] = fmt.Sprintf("%.3f", v)
		}
	}
	return out
}

// SummaryMarkdown is summary.md: the run's row, what the columns mean, the
// notes, and where the breakdown and contact sheets are.
func SummaryMarkdown(s *Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s\n\n", mdCell(s.Bench), mdCell(s.Method))
	b.WriteString(MarkdownTable([]*Summary{s}))
	b.WriteString("\nCLIP-I and DINO: mean cosine of every generated image with every real photo of its subject " +
		"(CLIP ViT-B/32 image features, DINO ViT-S/16 class token); CLIP-T: mean cosine of every generated image " +
		"with its prompt; each per subject, then averaged over the subjects. AP, AP50, AP75: COCO box AP " +
		"(pycocotools COCOeval, bbox, in percent) of the detector's boxes against the requested boxes over all images.\n")
	if len(s.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\nPer-subject scores: %s (and %s).\n", SubjectsMarkdownFile, SummaryFile)
	if len(s.ContactSheets) > 0 {
		fmt.Fprintf(&b, "\nContact sheets (images in %s order, %d per sheet; requested boxes in green and cyan for "+
			"the first and second subject, each subject's best-scoring detection of its classes in red and magenta):\n\n",
			RecordsFile, ContactSheetImages)
		for _, p := range s.ContactSheets {
			fmt.Fprintf(&b, "- %s\n", p)
		}
	}
	return b.String()
}

// SubjectsMarkdown is subjects.md: one row per subject.
func SubjectsMarkdown(s *Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s, per subject\n\n", mdCell(s.Bench), mdCell(s.Method))
	head := append([]string{"subject", "class", "images", "photos", "CLIP-I", "DINO", "CLIP-T", "AP", "AP50", "AP75"}, s.Metrics...)
	head = append(head, "detector classes")
	row(&b, head)
	row(&b, append(append([]string{"---", "---"}, repeat("--:", len(head)-3)...), "---"))
	for _, sub := range s.Subjects {
		classes := "(no detector)"
		if sub.DetectorClasses != nil {
			classes = "none: left out of AP"
			if len(sub.DetectorClasses) > 0 {
				classes = strings.Join(sub.DetectorClasses, ", ")
			}
		}
		cells := []string{mdCell(sub.Name), mdCell(sub.Class), fmt.Sprint(sub.Images), fmt.Sprint(sub.References)}
		cells = append(append(cells, scoreCells(sub.Scores)...), metricCells(sub.Scores, s.Metrics)...)
		row(&b, append(cells, mdCell(classes)))
	}
	return b.String()
}

func score(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f", *v)
}

func percent(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", 100**v)
}

// mdCell escapes what would break a table row.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func row(b *strings.Builder, cells []string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
