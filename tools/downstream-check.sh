#!/usr/bin/env bash
# A fresh downstream crate that depends on rsp with `default-features = false`
# and no ndarray of its own: it must build against `rsp::ndarray`, pull in at
# most 60 crates (itself excluded) and none of the optional parts' heavy
# dependencies. Prints the crate count.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "rsp-downstream-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
rsp = { path = "$root", default-features = false }

[workspace]
TOML
cat > "$dir/src/main.rs" <<'RS'
use rsp::ndarray::Array4;
use rsp::Network;

fn main() -> rsp::Result<()> {
    let path = std::env::args().nth(1).expect("path of data/digits_vgg.safetensors");
    let net = Network::<f32>::load(path)?;
    let x = Array4::from_shape_fn((1, 3, 64, 64), |(_, c, i, j)| ((c * 7 + i * 3 + j) % 17) as f32 / 17.0 - 0.5);
    let owned = rsp::attribute(&net, &x, 3)?;
    let viewed = rsp::attribute(&net, x.view(), 3)?;
    assert_eq!(owned, viewed, "an array and its view give the same attribution");
    println!("positive sum {:.6}, hostile sum {:.6}", owned.0.sum(), owned.1.sum());
    Ok(())
}
RS
cp "$root/Cargo.lock" "$dir/Cargo.lock"  # the versions the crate is tested with
cd "$dir"
crates=$(cargo tree --prefix none -e normal,build | sed 's/ (\*)//; s/ (proc-macro)//' | awk '{print $1}' | grep -v '^rsp-downstream-check$' | sort -u)
count=$(echo "$crates" | wc -l)
echo "downstream crate with default-features = false: $count crates"
for banned in image clap indicatif prost ndarray-npy font8x8 gemm-c32 gemm-c64; do
  if echo "$crates" | grep -qx "$banned"; then echo "FAIL: $banned is compiled without its feature"; exit 1; fi
done
if [ "$count" -gt 60 ]; then echo "FAIL: more than 60 crates"; exit 1; fi
if [ "${1:-}" = "--run" ]; then
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}/downstream" cargo run --release -q -- "$root/data/digits_vgg.safetensors"
fi
