"""`suture token`: create, list and revoke API tokens directly in the job store (for bootstrapping and
operators; admins can do the same through POST/GET/DELETE /v1/tokens)."""

from __future__ import annotations

import argparse

from suture.cli.common import EXIT_OK, CliError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("token", help="create, list or revoke API tokens of the service",
                                   description="Manage API tokens in the store at SUTURE_DATABASE_URL "
                                               "(default: the SQLite file of `suture serve`).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a token and print its secret (shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--admin", action="store_true", help="the token sees and manages everything")
    actions.add_parser("list", help="list tokens (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import re

    from suture.service.schemas import NAME_PATTERN
    from suture.service.settings import ServiceSettings
    from suture.service.store import TokenStore, make_engine

    tokens = TokenStore(make_engine(ServiceSettings.from_env().database_url))
    if args.action == "create":
        if not re.match(NAME_PATTERN, args.name):
            raise CliError("--name: use letters, digits, '.', '_' or '-' (at most 64)")
        created = tokens.create(args.name, admin=args.admin)
        print(f"token {created.id} ({created.name}{', admin' if created.admin else ''}):\n{created.token}")
    elif args.action == "list":
        for t in tokens.list():
            print(f"{t.id}\t{t.name}\t{'admin' if t.admin else 'user'}\t{'revoked' if t.revoked else 'active'}")
    else:
        if tokens.is_environment_admin(args.id):  # the server restores it at its next start anyway
            raise CliError(f"token {args.id} is the admin token of a server's environment (SUTURE_ADMIN_TOKEN): "
                           "change that variable and restart the server to retire it")
        revoked = tokens.revoke(args.id)
        if revoked is None:
            raise CliError(f"no token {args.id}")
        print(f"revoked token {revoked.id} ({revoked.name})")
    return EXIT_OK
