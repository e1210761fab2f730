package main

import (
	"fmt"

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

// addFlags registers specs on cmd (persistent ones when persistent is true)
// and binds each to v.
func addFlags(cmd *cobra.Command, v *viper.Viper, persistent bool, specs []flagSpec) {
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
			fs.StringSliceP(s.name, s.short, d, s.help)
		default:
			panic(fmt.Sprintf("flag --%s: unsupported default type %T", s.name, s.def))
		}
		if err := v.BindPFlag(s.name, fs.Lookup(s.name)); err != nil {
			panic(err)
		}
	}
}
