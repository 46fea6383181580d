#!/bin/sh
# Entry point of the suture image: runs its arguments (default `suture serve ...`, or `ray start ...`)
# after reading secrets from files. For VAR in the list below, VAR_FILE=/run/secrets/x sets VAR to the
# content of that file (trailing newlines dropped), the *_FILE convention of official images, so that
# compose secrets never show up in `docker inspect`. Kubernetes sets the variables from a Secret directly.
set -eu

for var in SUTURE_ADMIN_TOKEN SUTURE_DATABASE_URL; do
    eval "file=\${${var}_FILE:-}"
    [ -n "$file" ] || continue
    eval "current=\${${var}:-}"
    if [ -n "$current" ]; then
        echo "docker-entrypoint: both $var and ${var}_FILE are set; set only one" >&2
        exit 64
    fi
    if [ ! -r "$file" ]; then
        echo "docker-entrypoint: ${var}_FILE=$file is not a readable file" >&2
        exit 66
    fi
    value=$(cat "$file")
    export "$var=$value"
    unset "${var}_FILE"
done

exec "$@"
