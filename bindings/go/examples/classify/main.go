// Command classify labels every line of a file with the model's most likely
// next token, or one of -labels: classify [-labels " yes, no"] MODEL FILE.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"gomlx.dev/gomlx"
)

func main() {
	labels := flag.String("labels", "", "comma-separated labels (e.g. \" positive, negative\")")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: classify [-labels L1,L2] MODEL FILE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var sentences []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			sentences = append(sentences, line)
		}
	}
	f.Close()
	m, err := gomlx.LoadModel(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer m.Close()
	var opts []gomlx.ClassifyOption
	if *labels != "" {
		opts = append(opts, gomlx.WithLabels(strings.Split(*labels, ",")...))
	}
	res, bm, err := m.Classify(context.Background(), sentences, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i, r := range res {
		fmt.Printf("%q\t%q\n", sentences[i], r.Text)
	}
	fmt.Fprintf(os.Stderr, "%d prompts in %s (%.0f prompts/s)\n", bm.Prompts, bm.Total, bm.PromptsPerSec)
}
