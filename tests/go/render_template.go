// Command render_template executes an Ollama TEMPLATE the way Ollama's server does, for tests.
//
// It reads one JSON object from stdin:
//
//	{"template": "...", "system": "...", "messages": [{"role": "...", "content": "..."}]}
//
// and prints the rendered prompt to stdout (nothing else, no trailing newline).
//
// What it reproduces from Ollama (server/routes.go ChatHandler, template/template.go):
//   - "system" plays the Modelfile's SYSTEM: it is prepended as a system message when the
//     conversation does not already start with one;
//   - consecutive messages of the same role (except "tool") are merged with "\n\n" (collate),
//     and .System is all system messages joined with "\n\n";
//   - the template is parsed with Option("missingkey=zero") and Ollama's "json" function, and
//     executed with .Messages, .System, .Prompt and .Response (the last two empty, as Ollama
//     passes them to a template that uses .Messages).
//
// Standard library only: it builds offline.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
)

// Message mirrors the fields of Ollama's api.Message that a chat template reads.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Data holds the variables a template sees, under Ollama's names.
type Data struct {
	System   string
	Prompt   string
	Response string
	Messages []Message
}

type input struct {
	Template string    `json:"template"`
	System   string    `json:"system"`
	Messages []Message `json:"messages"`
}

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
}

func collate(msgs []Message) (string, []Message) {
	var system []string
	var out []Message
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == m.Role && m.Role != "tool" {
			out[len(out)-1].Content += "\n\n" + m.Content
		} else {
			out = append(out, m)
		}
	}
	return strings.Join(system, "\n\n"), out
}

func run() error {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("bad JSON on stdin: %w", err)
	}
	msgs := in.Messages
	if in.System != "" && (len(msgs) == 0 || msgs[0].Role != "system") {
		msgs = append([]Message{{Role: "system", Content: in.System}}, msgs...)
	}
	system, msgs := collate(msgs)
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(in.Template)
	if err != nil {
		return fmt.Errorf("template does not parse: %w", err)
	}
	return tmpl.Execute(os.Stdout, Data{System: system, Messages: msgs})
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "render_template:", err)
		os.Exit(1)
	}
}
