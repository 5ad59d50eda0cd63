"""Shell completion for ``foundationctl``, generated from the verb registry so it never lags behind a new verb.

``foundationctl completion bash`` / ``zsh`` prints a script to source (README: "Shell completion"). Child names
are completed live from ``foundationctl status --json`` when a daemon answers; nothing is completed otherwise.
"""

from __future__ import annotations

import argparse

from daemon.control.verbs.base import Verb

NAME_VERBS = ("status", "start", "stop", "restart", "signal", "pid", "detach", "send", "call", "state", "logs")

BASH = r"""# foundationctl completion for bash: source <(foundationctl completion bash)
_foundationctl_children() {
    foundationctl status --json 2>/dev/null | python3 -c 'import json,sys
def walk(n):
    yield n["name"]
    for c in n.get("children", []): yield from walk(c)
print(" ".join(walk(json.load(sys.stdin)["tree"])))' 2>/dev/null
}
_foundationctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} verb=${COMP_WORDS[1]}
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "%(verbs)s --runtime-dir --config -h --help" -- "$cur"))
    elif [[ " %(name_verbs)s " == *" $verb "* && "$cur" != -* ]]; then
        COMPREPLY=($(compgen -W "$(_foundationctl_children) all" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "--json --help" -- "$cur"))
    fi
}
complete -F _foundationctl foundationctl
"""

ZSH = r"""#compdef foundationctl
# foundationctl completion for zsh: foundationctl completion zsh > "${fpath[1]}/_foundationctl"
_foundationctl() {
    local -a verbs
    verbs=(%(described)s)
    if (( CURRENT == 2 )); then
        _describe 'verb' verbs
    else
        local -a children
        children=(${(f)"$(foundationctl status --json 2>/dev/null | python3 -c 'import json,sys
def walk(n):
    yield n["name"]
    for c in n.get("children", []): yield from walk(c)
print("\n".join(walk(json.load(sys.stdin)["tree"])))' 2>/dev/null)"} all)
        _describe 'child' children
    fi
}
compdef _foundationctl foundationctl
"""


def script(shell: str, verbs: dict[str, Verb]) -> str:
    names = [*verbs, "completion"]
    if shell == "bash":
        return BASH % {"verbs": " ".join(names), "name_verbs": " ".join(NAME_VERBS)}
    described = " ".join(f"'{n}:{verbs[n].help.replace(chr(39), '')}'" if n in verbs else f"'{n}:shell completion'"
                         for n in names)
    return ZSH % {"described": described}


def setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=("bash", "zsh"), help="the shell to print a completion script for")
