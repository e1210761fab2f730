package eval

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DreamBench is the DreamBench dataset of DreamBooth (Ruiz et al., CVPR
// 2023) as google/dreambooth publishes it in dataset/: one folder of
// photos per subject and prompts_and_classes.txt, which gives each
// subject's class noun and the two lists of prompt templates.
type DreamBench struct {
	// Dir is the folder LoadDreamBench read.
	Dir string
	// Subjects are in the order prompts_and_classes.txt lists them
	// (alphabetical in the published file).
	Subjects []Subject
	// ObjectPrompts and LivePrompts are the templates exactly as the
	// file gives them, e.g. "a {0} {1} in the jungle": Python
	// str.format templates where {0} is DreamBooth's unique token and {1}
	// the class noun. Index i of each list is prompt i of a subject of
	// that kind.
	ObjectPrompts, LivePrompts []string
}

// Subject is one DreamBench subject.
type Subject struct {
	// Name is the subject's folder name, e.g. "dog2" or "backpack_dog".
	Name string
	// Class is the class noun, possibly two words ("stuffed animal").
	Class string
	// Live marks a live subject, which takes the live-subject prompt
	// list; the others take the object list.
	Live bool
	// Images are the paths of the reference photos, sorted by name.
	Images []string
}

// Prompts are the templates of the subject's kind.
func (d *DreamBench) Prompts(s *Subject) []string {
	if s.Live {
		return d.LivePrompts
	}
	return d.ObjectPrompts
}

// dreamBenchLiveClasses are the classes of the live subjects. The prompts
// file does not say which subject takes which list; google/dreambooth's
// README does: the live subjects are the dogs and cats (so backpack_dog,
// whose class is backpack, is an object).
var dreamBenchLiveClasses = []string{"cat", "dog"}

// DreamBenchPromptsFile is the file naming the classes and prompts.
const DreamBenchPromptsFile = "prompts_and_classes.txt"

// dreamBenchImageExts are the photo file extensions LoadDreamBench lists
// (the published dataset has only .jpg).
var dreamBenchImageExts = []string{".jpg", ".jpeg", ".png"}

// LoadDreamBench reads a DreamBench folder: prompts_and_classes.txt and,
// for each subject it lists, the subject's folder of photos. Only paths
// are recorded; the photos are read when used (data.ReadImage).
func LoadDreamBench(dir string) (*DreamBench, error) {
	path := filepath.Join(dir, DreamBenchPromptsFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dreambench: %w", err)
	}
	d, err := parseDreamBenchPrompts(raw)
	if err != nil {
		return nil, fmt.Errorf("dreambench: %s:%w", path, err)
	}
	d.Dir = dir
	for i := range d.Subjects {
		s := &d.Subjects[i]
		folder := filepath.Join(dir, s.Name)
		entries, err := os.ReadDir(folder)
		if err != nil {
			return nil, fmt.Errorf("dreambench: subject %q: %w", s.Name, err)
		}
		for _, e := range entries {
			ext := strings.ToLower(filepath.Ext(e.Name()))
			if e.Type().IsRegular() && slices.Contains(dreamBenchImageExts, ext) {
				s.Images = append(s.Images, filepath.Join(folder, e.Name()))
			}
		}
		// os.ReadDir sorts by name already; sorting again states the
		// order the callers rely on rather than leaving it implied.
		slices.Sort(s.Images)
		if len(s.Images) == 0 {
			return nil, fmt.Errorf("dreambench: subject %q: no images in %s", s.Name, folder)
		}
	}
	return d, nil
}

// parseDreamBenchPrompts parses prompts_and_classes.txt. The file, as
// published, is
//
//	Classes
//
//	subject_name,class
//	backpack,backpack
//	...
//
//	Prompts
//
//	Object Prompts
//
//	prompt_list = [
//	'a {0} {1} in the jungle'.format(unique_token, class_token),
//	...
//	'a cube shaped {0} {1}'.format(unique_token, class_token)
//	]
//
//	Live Subject Prompts
//
//	prompt_list = [
//	...
//	]
//
// Blank lines are skipped; anything else out of place is an error, so a
// changed file fails loudly instead of yielding a wrong benchmark. Errors
// start with the line number (the caller prefixes the path).
func parseDreamBenchPrompts(raw []byte) (*DreamBench, error) {
	d := &DreamBench{}
	const (
		wantClasses = iota
		wantHeader
		inClasses
		wantListTitle
		wantListOpen
		inList
	)
	state := wantClasses
	var list *[]string // the prompt list being read
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t\r")
		if line == "" {
			if state == inClasses {
				state = wantListTitle
			}
			continue
		}
		switch state {
		case wantClasses:
			if line != "Classes" {
				return nil, fmt.Errorf("%d: want \"Classes\", got %q", n, line)
			}
			state = wantHeader
		case wantHeader:
			if line != "subject_name,class" {
				return nil, fmt.Errorf("%d: want \"subject_name,class\", got %q", n, line)
			}
			state = inClasses
		case inClasses:
			name, class, ok := strings.Cut(line, ",")
			name, class = strings.TrimSpace(name), strings.TrimSpace(class)
			if !ok || name == "" || class == "" {
				return nil, fmt.Errorf("%d: want \"subject,class\", got %q", n, line)
			}
			// The name becomes a folder path: keep it to one element.
			if name != filepath.Base(name) || name == "." || name == ".." {
				return nil, fmt.Errorf("%d: subject name %q is not a folder name", n, name)
			}
			if seen[name] {
				return nil, fmt.Errorf("%d: subject %q listed twice", n, name)
			}
			seen[name] = true
			d.Subjects = append(d.Subjects, Subject{
				Name: name, Class: class, Live: slices.Contains(dreamBenchLiveClasses, class),
			})
		case wantListTitle:
			switch line {
			case "Prompts":
				// The heading over both lists.
			case "Object Prompts":
				list, state = &d.ObjectPrompts, wantListOpen
			case "Live Subject Prompts":
				list, state = &d.LivePrompts, wantListOpen
			default:
				return nil, fmt.Errorf("%d: want a prompt list title, got %q", n, line)
			}
			if list != nil && len(*list) > 0 {
				return nil, fmt.Errorf("%d: %q given twice", n, line)
			}
		case wantListOpen:
			if line != "prompt_list = [" {
				return nil, fmt.Errorf("%d: want \"prompt_list = [\", got %q", n, line)
			}
			state = inList
		case inList:
			if line == "]" {
				if len(*list) == 0 {
					return nil, fmt.Errorf("%d: empty prompt list", n)
				}
				list, state = nil, wantListTitle
				continue
			}
			t, err := parseDreamBenchTemplate(line)
			if err != nil {
				return nil, fmt.Errorf("%d: %v", n, err)
			}
			*list = append(*list, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%d: %v", n, err)
	}
	switch {
	case state == inList:
		return nil, fmt.Errorf("%d: prompt list not closed by \"]\"", n)
	case len(d.Subjects) == 0:
		return nil, fmt.Errorf("%d: no subjects", n)
	case len(d.ObjectPrompts) == 0 || len(d.LivePrompts) == 0:
		return nil, fmt.Errorf("%d: want both \"Object Prompts\" and \"Live Subject Prompts\"", n)
	}
	return d, nil
}

// parseDreamBenchTemplate reads one list element,
//
//	'a {0} {1} in the jungle'.format(unique_token, class_token),
//
// and returns the template between the quotes. The trailing comma is
// optional, as in Python (the published lists omit it on the last line).
func parseDreamBenchTemplate(line string) (string, error) {
	const suffix = "'.format(unique_token, class_token)"
	body := strings.TrimSuffix(line, ",")
	if !strings.HasPrefix(body, "'") || !strings.HasSuffix(body, suffix) {
		return "", fmt.Errorf("want '<template>'.format(unique_token, class_token), got %q", line)
	}
	t := body[1 : len(body)-len(suffix)]
	// A quote or backslash inside would need Python's escaping rules,
	// and a brace other than {0} and {1} str.format's: none occurs in the
	// published file, so refuse them rather than half-implement them.
	if strings.ContainsAny(t, `'\`) {
		return "", fmt.Errorf("quote or backslash inside template %q", t)
	}
	if strings.Count(t, "{0} ") != 1 || strings.Count(t, "{1}") != 1 {
		return "", fmt.Errorf("template %q must hold \"{0} \" and \"{1}\" once each", t)
	}
	rest := strings.NewReplacer("{0}", "", "{1}", "").Replace(t)
	if strings.ContainsAny(rest, "{}") {
		return "", fmt.Errorf("template %q has a brace other than {0} and {1}", t)
	}
	return t, nil
}

// DreamBoothPrompt fills a template the way the file's Python does,
// template.format(uniqueToken, class): "a sks dog in the jungle".
func DreamBoothPrompt(template, uniqueToken, class string) string {
	return strings.NewReplacer("{0}", uniqueToken, "{1}", class).Replace(template)
}

// TuningFreePrompt fills a template for a tuning-free method, which has no
// unique token: "{0}" and the single space after it are dropped and "{1}"
// becomes the class noun, so "a {0} {1} in the jungle" gives "a dog in the
// jungle" (the form BLIP-Diffusion, IP-Adapter and the paper's comparisons
// prompt with). Templates from LoadDreamBench always hold "{0} " once.
func TuningFreePrompt(template, class string) string {
	return strings.NewReplacer("{0} ", "", "{1}", class).Replace(template)
}
