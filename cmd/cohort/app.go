package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/urfave/cli/v2"
)

// buildVersion is the module version (or "devel"), the Go version and the BLAS this binary uses.
func buildVersion() string {
	v, gov := "devel", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		gov = bi.GoVersion
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("%s (%s, blas %s)", v, gov, nn.BLAS)
}

// newApp builds the command-line application; tests run it with app.Writer set to a buffer.
func newApp() *cli.App {
	app := &cli.App{
		Name:                 "cohort",
		Usage:                "train one model together over slow links and pay data contributors fairly",
		EnableBashCompletion: true,
		// --version names the build's BLAS: replicas with different BLAS compute gradients that
		// differ in the last bits.
		Version: buildVersion(),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn, error", EnvVars: []string{"COHORT_LOG_LEVEL"}},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(errWriter(c), &slog.HandlerOptions{Level: lvl})))
			return nil
		},
		Commands: []*cli.Command{
			trainCommand(),
			stageCommand(),
			keygenCommand(),
			coordinatorCommand(),
			approveCoordinatorCommand(),
			removeCoordinatorCommand(),
			proposeCommand(),
			voteCommand(),
			registerCommand(),
			fundCommand(),
			grantCommand(),
			proposalsCommand(),
			statusCommand(),
			reportCommand(),
			balanceCommand(),
			simulateCommand(),
			auditCommand(),
			joinCommand(),
			shardCommand(),
			exportCommand(),
			generateCommand(),
		},
		// One line, not the whole help text, for a mistyped flag.
		OnUsageError:   func(c *cli.Context, err error, isSub bool) error { return err },
		ExitErrHandler: func(*cli.Context, error) {},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = func(c *cli.Context, err error, isSub bool) error {
				return fmt.Errorf("%s: %w", c.Command.Name, err)
			}
		}
	}
	return app
}

func errWriter(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return os.Stderr
}

// envVars names the COHORT_* environment variable of a flag.
func envVars(flag string) []string {
	return []string{"COHORT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}
