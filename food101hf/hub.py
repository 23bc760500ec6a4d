"""Share an output folder on the Hub, or serve it in a Space: the `python -m food101hf.hub` command.

    python -m food101hf.hub push OUTPUT_DIR ORG/NAME [--private] [--revision BRANCH] [--commit-message MSG]
    python -m food101hf.hub space MODEL ORG/SPACE [--private]     # a Gradio Space serving a pushed model (space.py)

The token comes from the environment (HF_TOKEN) or `hf auth login`, never from a file of ours. What a push
uploads: food101hf.publish; what a Space holds: food101hf.space.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before huggingface_hub loads
    from food101hf.cli import parse_early
    from food101hf.parsers import hub_parser

    parse_early(hub_parser)

from .cli import run
from .parsers import hub_parser
from .publish import push_folder
from .space import create_space


def main(argv: list[str] | None = None) -> int:
    args = hub_parser().parse_args(argv)
    if args.command == "space":
        print(create_space(args.model, args.space_id, private=args.private))
    else:
        print(push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message))
    return 0


if __name__ == "__main__":
    run(main)
