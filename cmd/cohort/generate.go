package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/generate"
	"github.com/cohortlab/cohort/trainer/safetensors"
)

// maxModelFile bounds the .safetensors file generate reads (the largest GPT nn allows, in fp32,
// with its tied head written twice, is well below it).
const maxModelFile = 1 << 30

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "sample text from an exported GPT (.safetensors from cohort export)",
		Description: `Continues --prompt byte by byte with the model of FILE: temperature 0 takes the most
   likely byte every time; the same file, prompt, temperature and seed give the same text.

   Example:
     cohort generate --model model.safetensors --prompt "ROMEO:" --tokens 300 --temperature 0.8 --seed 1`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Required: true, Usage: "an exported GPT (.safetensors)", EnvVars: envVars("model")},
			&cli.StringFlag{Name: "prompt", Value: "\n", Usage: "the text to continue", EnvVars: envVars("prompt")},
			&cli.IntFlag{Name: "tokens", Value: 300, Usage: "bytes to generate", EnvVars: envVars("tokens")},
			&cli.Float64Flag{Name: "temperature", Value: 0.8, Usage: "sampling temperature (0: greedy)", EnvVars: envVars("temperature")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the sampler", EnvVars: envVars("seed")},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("generate: unexpected argument %q", c.Args().First())
			}
			if err := checkFlags(c, "generate", between("tokens", 1, generate.MaxTokens), between("temperature", 0, 100)); err != nil {
				return err
			}
			path := c.String("model")
			st, err := os.Stat(path)
			if err != nil {
				return fmt.Errorf("generate: --model: %w", err)
			}
			if st.Size() > maxModelFile {
				return fmt.Errorf("generate: --model %s: %d bytes, more than any model this build can run (%d)", path, st.Size(), maxModelFile)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("generate: --model: %w", err)
			}
			p, layout, theta, err := export.Import(b, safetensors.Limits{})
			if err != nil {
				return fmt.Errorf("generate: %s: %w", path, err)
			}
			m, err := generate.New(p.Spec, layout, theta)
			if err != nil {
				return fmt.Errorf("generate: %s (%s): %w", path, p.Spec, err)
			}
			out, err := m.Generate([]byte(c.String("prompt")), generate.Options{Tokens: c.Int("tokens"), Temperature: c.Float64("temperature"), Seed: c.Uint64("seed")})
			if err != nil {
				return fmt.Errorf("generate: %w", err)
			}
			_, err = fmt.Fprintf(c.App.Writer, "%s%s\n", c.String("prompt"), out)
			return err
		},
	}
}
