package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/lcpdiff/lcpdiff/internal/torch"
)

var rootFlags = []flagSpec{
	{"config", "", "", "YAML file of flag values; flags on the command line override it"},
	{"threads", "", 0, "libtorch intra-op threads, and OpenBLAS's unless OPENBLAS_NUM_THREADS is set (0: $OMP_NUM_THREADS, else all cores)"},
}

func newRootCommand() *cobra.Command {
	v := viper.New()
	root := &cobra.Command{
		Use:           "lcpdiff",
		Short:         "Layout-controllable, tuning-free multi-subject image generation (LCP-Diffusion) on libtorch",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := bindFlags(v, cmd); err != nil {
				return err
			}
			if path := v.GetString("config"); path != "" {
				v.SetConfigFile(path)
				if err := v.ReadInConfig(); err != nil {
					return fmt.Errorf("config %s: %w", path, err)
				}
			}
			if n := v.GetInt("threads"); n != 0 {
				if n < 0 {
					return fmt.Errorf("--threads %d: must be 0 or more", n)
				}
				torch.SetNumThreads(n)
			}
			return nil
		},
	}
	addFlags(root, true, rootFlags)
	root.AddCommand(newVersionCommand(), newDoctorCommand(v), newGenerateCommand(v))
	root.AddCommand(newDataCommand(v))
	root.AddCommand(newTrainCommand(v))
	root.AddCommand(newEvalCommand(v))
	root.AddCommand(newModelCommand(v))
	return root
}

// lcpdiffVersion is the build's version: the -ldflags value, else the
// module's, else the VCS revision Go recorded.
func lcpdiffVersion() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "dev"
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of lcpdiff, Go and libtorch",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "lcpdiff %s\n", lcpdiffVersion())
			fmt.Fprintf(out, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Fprintf(out, "libtorch %s\n", torch.Version())
		},
	}
}
