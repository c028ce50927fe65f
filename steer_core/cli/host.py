"""`space`: what a Hugging Face Space needs from this repository, with sizes (--dry-run), and the upload."""

from __future__ import annotations

import json

from .common import UsageError


def cmd_space(args) -> int:
    from .. import space

    files = space.check()
    total = sum(f.size for f in files)
    if args.dry_run or not args.repo:
        for f in files:
            print(f"{space.human(f.size):>9}  {'LFS ' if f.lfs else '    '} {f.path}")
        lfs = sum(f.size for f in files if f.lfs)
        print(f"{len(files)} files, {space.human(total)} ({space.human(lfs)} through LFS); nothing uploaded")
        if not args.dry_run:
            raise UsageError("give --repo USER/SPACE to upload (or --dry-run to list only)")
        return 0
    url = space.upload(args.repo, files=files)
    print(json.dumps({"repo": args.repo, "files": len(files), "bytes": total, "commit": url}))
    return 0


def register(sub) -> None:
    sp = sub.add_parser(
        "space",
        help="upload what a Hugging Face Space needs (app, package, assets; binaries through LFS), or list it",
    )
    sp.add_argument("--repo", default=None, help="the Space, USER/NAME (created if missing; needs `hf auth login`)")
    sp.add_argument("--dry-run", action="store_true", help="print the files and sizes; upload nothing")
    sp.set_defaults(func=cmd_space)
