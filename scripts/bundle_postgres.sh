#!/usr/bin/env bash
# Packs this machine's PostgreSQL server (initdb, postgres, their extension libraries, share
# files and the shared libraries they link beyond glibc) into one archive, for a machine that
# has no PostgreSQL and no network (the GPU machine of `make gpu-check`). Paths keep their
# layout under the archive root, so PostgreSQL finds its share files relative to its binary.
# Usage: scripts/bundle_postgres.sh OUT.tar.xz
set -euo pipefail
out=$1
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/postgresql/$ver/bin" "$root/usr/lib/postgresql/$ver/lib" "$root/usr/share/postgresql" "$root/libs"
cp /usr/lib/postgresql/"$ver"/bin/{postgres,initdb,pg_ctl} "$root/usr/lib/postgresql/$ver/bin/"
# Procedural language, snowball dictionaries, encoding conversions; not the LLVM JIT.
find /usr/lib/postgresql/"$ver"/lib -maxdepth 1 -name '*.so' ! -name 'llvmjit*' -exec cp {} "$root/usr/lib/postgresql/$ver/lib/" \;
cp -r /usr/share/postgresql/"$ver" "$root/usr/share/postgresql/"
for b in "$root"/usr/lib/postgresql/"$ver"/bin/* "$root"/usr/lib/postgresql/"$ver"/lib/*.so; do
    ldd "$b" 2>/dev/null | awk '/=> \//{print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*)\.so' | while read -r lib; do
    cp -L "$lib" "$root/libs/"
done
tar -C "$root" -cJf "$out" .
echo "$out: PostgreSQL $ver, $(du -h "$out" | cut -f1)"
