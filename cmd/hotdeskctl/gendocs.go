package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/hotdesk/hotdesk/internal/version"
)

// gendocsCmd is the hidden "__gendocs man|bash|zsh DIR" used by packaging:
// it writes the man pages (one per command, hotdeskctl.1 and
// hotdeskctl-*.1) or the shell completion file into DIR.
func gendocsCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:               "__gendocs man|bash|zsh DIR",
		Hidden:            true,
		Args:              exactArgs(2, "a kind (man, bash or zsh) and a directory"),
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, dir := args[0], args[1]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root.DisableAutoGenTag = true
			// Cobra adds -h and -v/--version only when it runs a command:
			// the pages must list them.
			root.InitDefaultHelpFlag()
			root.InitDefaultVersionFlag()
			switch kind {
			case "man":
				return doc.GenManTree(root, &doc.GenManHeader{Title: "HOTDESKCTL", Section: "8", // an administrator's command, like hotdeskd(8)
					Source: "hotdesk " + version.String(), Manual: "hotdesk manual"}, dir)
			case "bash":
				return root.GenBashCompletionFileV2(dir+"/hotdeskctl", true)
			case "zsh":
				return root.GenZshCompletionFile(dir + "/_hotdeskctl")
			}
			return usagef("__gendocs: unknown kind %q (man, bash or zsh)", kind)
		},
	}
}
