package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// flagSpec declares a flag once: name, shorthand, default and help side by
// side, so the help text and the behaviour cannot drift apart. The same name
// is the key in a YAML config file (viper); a flag given on the command line
// wins over the file.
type flagSpec struct {
	name  string
	short string
	def   any // string, int, float64, bool or []string
	help  string
}

// addFlags registers specs on cmd (persistent ones when persistent is true).
// They are bound to viper only when cmd runs (bindFlags), so that two
// commands may share a flag name.
func addFlags(cmd *cobra.Command, persistent bool, specs []flagSpec) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	for _, s := range specs {
		switch d := s.def.(type) {
		case string:
			fs.StringP(s.name, s.short, d, s.help)
		case int:
			fs.IntP(s.name, s.short, d, s.help)
		case float64:
			fs.Float64P(s.name, s.short, d, s.help)
		case bool:
			fs.BoolP(s.name, s.short, d, s.help)
		case []string:
			fs.StringArrayP(s.name, s.short, d, s.help) // repeated, never split on commas: paths may hold them
		default:
			panic(fmt.Sprintf("flag --%s: unsupported default type %T", s.name, s.def))
		}
	}
}

// bindFlags makes the running command's flags (its own and the inherited
// persistent ones) the flag layer of v.
func bindFlags(v *viper.Viper, cmd *cobra.Command) error {
	return v.BindPFlags(cmd.Flags())
}

// fill breaks text into lines of at most width columns at its spaces, for a
// help paragraph part of which is generated (a word longer than width
// keeps a line to itself). Greedy filling of ASCII help text is a dozen
// lines; no module the project uses wraps text, and cobra leaves help
// text as written.
func fill(text string, width int) string {
	var b strings.Builder
	line := 0
	for i, w := range strings.Fields(text) {
		switch {
		case i == 0:
		case line+1+len(w) > width:
			b.WriteByte('\n')
			line = 0
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}
