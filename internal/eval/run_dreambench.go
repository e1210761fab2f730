package eval

import (
	"errors"
	"fmt"
)

// DreamBench as benchmarks: "dreambench" (one subject per image, the
// cases of Cases) and "dreambench-multi" (a live subject and an object per
// image, the cases of MultiCases). Each subject is named in the prompt by
// its class noun, which is also its grounding phrase and the static
// refiner's category; the generator sees its first Views photos and the
// identity metrics compare with all of them. DreamBench has no masks: a
// subject's photos count whole.

func init() {
	RegisterBench("dreambench", openDreamBench)
	RegisterBench("dreambench-multi", openDreamBenchMulti)
}

// itemBench is a benchmark that is its list of items, with no scorer.
type itemBench struct {
	name  string
	items []Item
}

func (b *itemBench) Name() string   { return b.name }
func (b *itemBench) Items() []Item  { return b.items }
func (b *itemBench) Scorer() Scorer { return nil }

func loadDreamBenchFor(name string, o BenchOptions) (*DreamBench, CaseOptions, error) {
	if o.Data == "" {
		return nil, CaseOptions{}, fmt.Errorf("bench %s: no data folder (the DreamBench dataset: prompts_and_classes.txt and a folder of photos per subject)", name)
	}
	if o.Views < 0 {
		return nil, CaseOptions{}, errors.New("views must be 0 (one) or more")
	}
	d, err := LoadDreamBench(o.Data)
	return d, CaseOptions{ImagesPerPrompt: o.ImagesPerPrompt, BaseSeed: o.BaseSeed, Limit: o.Limit}, err
}

// dreamBenchSubject is s as an item's subject, asked for at box.
func dreamBenchSubject(s *Subject, box [4]float64, views int) ItemSubject {
	views = min(max(views, 1), len(s.Images))
	return ItemSubject{
		Name: s.Name, Class: s.Class, Word: s.Class, Phrase: s.Class,
		Views: s.Images[:views], References: s.Images, Box: box,
	}
}

func openDreamBench(o BenchOptions) (Bench, error) {
	d, co, err := loadDreamBenchFor("dreambench", o)
	if err != nil {
		return nil, err
	}
	b := &itemBench{name: "dreambench"}
	for _, c := range d.Cases(co) {
		b.items = append(b.items, Item{
			// subject / prompt index / image index: stable as long as
			// the prompt list and the options are.
			ID:       fmt.Sprintf("%s/p%02d/i%d", c.Subject.Name, c.PromptIndex, c.ImageIndex),
			Prompt:   c.Prompt,
			Seed:     c.Seed,
			Subjects: []ItemSubject{dreamBenchSubject(c.Subject, c.Box, o.Views)},
		})
	}
	return b, nil
}

func openDreamBenchMulti(o BenchOptions) (Bench, error) {
	d, co, err := loadDreamBenchFor("dreambench-multi", o)
	if err != nil {
		return nil, err
	}
	cases, err := d.MultiCases(co)
	if err != nil {
		return nil, err
	}
	b := &itemBench{name: "dreambench-multi"}
	for _, c := range cases {
		b.items = append(b.items, Item{
			ID:     fmt.Sprintf("%s+%s/p%02d/i%d", c.Subjects[0].Name, c.Subjects[1].Name, c.PromptIndex, c.ImageIndex),
			Prompt: c.Prompt,
			Seed:   c.Seed,
			Subjects: []ItemSubject{
				dreamBenchSubject(c.Subjects[0], c.Boxes[0], o.Views),
				dreamBenchSubject(c.Subjects[1], c.Boxes[1], o.Views),
			},
		})
	}
	return b, nil
}
