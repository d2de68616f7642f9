#!/usr/bin/env bash
# test_check.sh KILN SRCDIR — `kiln check` on the examples: exit 0, the exact parameter
# count (computed by hand below from each architecture and the SPEC's parameter list),
# --json is one valid JSON object with plausible params/flops/memory, and -D rebinds dims.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

# ---- exact parameter counts -----------------------------------------------------------
# attention with biases: .q .k .v .o, each (D, D) + (D)     → 4(D² + D)
# layernorm: weight + bias                                    → 2D
# feed_forward: fc1 (H, D) + (H), fc2 (D, H) + (D)            → 2HD + H + D
# encoder_layer = attn + ln1 + ff + ln2
# decoder_layer = self_attn + ln1 + cross_attn + ln2 + ff + ln3 (memory dim = D here)
attn() { echo $((4 * ($1 * $1 + $1))); }
ln() { echo $((2 * $1)); }
ff() { echo $((2 * $1 * $2 + $2 + $1)); } # D H
enc() { echo $(($(attn "$1") + $(ln "$1") + $(ff "$1" "$2") + $(ln "$1"))); }
dec() { echo $((2 * $(attn "$1") + 3 * $(ln "$1") + $(ff "$1" "$2"))); }

# char_gpt: wte (256, 384) + wpe (256, 384) + 6 pre-LN blocks (H 1536) + ln_f;
# the head is tied to wte.weight and has no bias
gpt_blocks=$((6 * $(enc 384 1536)))
[[ $gpt_blocks -eq 10646784 ]] || fail "hand count of char_gpt's blocks is $gpt_blocks"
want_char_gpt=$((256 * 384 + 256 * 384 + gpt_blocks + $(ln 384)))
# bert_classifier: emb (262, 256) + pos (512, 256) + ln_emb + 4 blocks (H 1024)
# + head (2, 256) + (2)
want_bert_classifier=$((262 * 256 + 512 * 256 + $(ln 256) + 4 * $(enc 256 1024) + 2 * 256 + 2))
# translator: src_emb (262, 256) + 3 enc + memory LN + tgt_emb (262, 256) + 3 dec + ln_f;
# sinusoidal positions have no parameters, the head is tied without a bias
want_translator=$((262 * 256 + 3 * $(enc 256 1024) + $(ln 256) + 262 * 256 + 3 * $(dec 256 1024) + $(ln 256)))
[[ $want_char_gpt -eq 10844160 ]] || fail "hand count of char_gpt is $want_char_gpt"
[[ $want_bert_classifier -eq 3358210 ]] || fail "hand count of bert_classifier is $want_bert_classifier"
[[ $want_translator -eq 5664768 ]] || fail "hand count of translator is $want_translator"

# ---- every example checks, text and --json ------------------------------------------------
examples=("$src"/examples/*.json)
[[ ${#examples[@]} -ge 3 ]] || fail "expected at least 3 examples, found ${#examples[@]}"
for model in "${examples[@]}"; do
    name=$(basename "$model" .json)
    if ! "$kiln" check "$model" >"$name.txt" 2>"$name.err"; then
        fail "kiln check $model exited non-zero: $(head -n 5 "$name.err")"
        continue
    fi
    [[ -s $name.err ]] && fail "kiln check $model wrote to stderr: $(head -n 3 "$name.err")"
    grep -q '^parameters: [0-9]' "$name.txt" || fail "$name: no 'parameters: N' line in the text output"
    if ! "$kiln" check "$model" --json >"$name.json" 2>"$name.err"; then
        fail "kiln check $model --json exited non-zero: $(head -n 5 "$name.err")"
        continue
    fi
    "$py" -c 'import json,sys; json.load(sys.stdin)' <"$name.json" || fail "$name: --json output is not valid JSON"
    want_var=want_$name
    want=${!want_var:-}
    # the text and the JSON agree, and both give the hand count when we have one
    text_params=$(sed -n 's/^parameters: \([0-9]*\).*/\1/p' "$name.txt")
    json_params=$("$py" -c 'import json,sys; print(int(json.load(sys.stdin)["params"]))' <"$name.json" 2>/dev/null || echo "?")
    [[ $text_params == "$json_params" ]] || fail "$name: text says $text_params parameters, --json says $json_params"
    if [[ -n $want && $json_params != "$want" ]]; then fail "$name: params is $json_params, expected $want"; fi
    # plausibility of the other fields
    "$py" - "$name.json" <<'EOF' || fail "$name: implausible --json values (above)"
import json, sys
j = json.load(open(sys.argv[1]))
bad = []
for key in ("params", "flops", "unplanned_bytes", "lower_bound_bytes"):
    v = j.get(key)
    if not isinstance(v, (int, float)) or v != int(v) or v <= 0:
        bad.append(f"{key} = {v!r} is not a positive integer")
if not bad:
    if j["lower_bound_bytes"] > j["unplanned_bytes"]:
        bad.append(f"lower_bound_bytes {j['lower_bound_bytes']} > unplanned_bytes {j['unplanned_bytes']}")
    # one forward pass uses every weight at least once per example
    if j["flops"] < j["params"]:
        bad.append(f"flops {j['flops']} < params {j['params']}")
    # with the compiler: a memory plan lies between the lower bound and no reuse at all
    if "workspace_bytes" in j:
        w = j["workspace_bytes"]
        if not isinstance(w, (int, float)) or not j["lower_bound_bytes"] <= w <= j["unplanned_bytes"]:
            bad.append(f"workspace_bytes {w!r} outside [lower_bound_bytes, unplanned_bytes]")
    if "kernels" in j and not (isinstance(j["kernels"], (int, float)) and j["kernels"] >= 1):
        bad.append(f"kernels {j['kernels']!r} is not a positive count")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF
done

# ---- char_gpt in detail: FLOPs and memory against the architecture -------------------------
"$kiln" check "$src/examples/char_gpt.json" --json >gpt.json
"$py" - gpt.json <<'EOF' || fail "char_gpt --json values (above)"
import json, sys
j = json.load(open(sys.argv[1]))
B, T, D, H, L, V, heads = 8, 256, 384, 1536, 6, 256, 6
bad = []
if j.get("dims") not in (None, {"B": B, "T": T}):
    bad.append(f"dims {j.get('dims')} != defaults B={B} T={T}")
out = j.get("outputs", {}).get("logits")
if out is not None and out != [B, T, V]:
    bad.append(f"logits shape {out} != {[B, T, V]}")
# every matmul weight is used once per token: 2 FLOPs per multiply-add
weights = L * (4 * D * D + 2 * H * D) + V * D  # blocks + tied head
matmul = 2 * B * T * weights
attention = L * 2 * (2 * B * T * T * D)  # q·kᵀ and p·v, all heads
low, high = matmul, 1.5 * (matmul + attention)
if not low <= j["flops"] <= high:
    bad.append(f"flops {j['flops']} outside [{low}, {high:.0f}] (matmuls alone are {matmul})")
# intermediates: the FF hidden activation (B, T, H) f32 is one value, so at least that is
# live at once; every layer makes one, so the sum without reuse is at least L of them
hidden = B * T * H * 4
if j["lower_bound_bytes"] < hidden:
    bad.append(f"lower_bound_bytes {j['lower_bound_bytes']} < one FF activation {hidden}")
if j["unplanned_bytes"] < L * hidden:
    bad.append(f"unplanned_bytes {j['unplanned_bytes']} < {L} FF activations {L * hidden}")
if j["unplanned_bytes"] > 8 << 30:
    bad.append(f"unplanned_bytes {j['unplanned_bytes']} is over 8 GiB for a 10M-parameter model")
if j["params"] != 10844160:
    bad.append(f"params {j['params']} != 10844160")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF

# ---- -D rebinds dims: the outputs follow, the parameters do not --------------------------
if "$kiln" check "$src/examples/char_gpt.json" --json -D B=1 -D T=16 >small.json 2>small.err; then
    "$py" - gpt.json small.json <<'EOF' || fail "-D B=1 -D T=16 (above)"
import json, sys
big, small = (json.load(open(p)) for p in sys.argv[1:3])
bad = []
if small.get("dims") is not None and small["dims"] != {"B": 1, "T": 16}:
    bad.append(f"dims {small['dims']} != B=1 T=16")
if small.get("outputs", {}).get("logits", [1, 16, 256]) != [1, 16, 256]:
    bad.append(f"logits {small['outputs']['logits']} != [1, 16, 256]")
if small["params"] != big["params"]:
    bad.append(f"params changed with the dims: {small['params']} vs {big['params']}")
if not small["flops"] * 100 < big["flops"]:
    bad.append(f"flops at B=1 T=16 ({small['flops']}) not far below B=8 T=256 ({big['flops']})")
if not small["unplanned_bytes"] < big["unplanned_bytes"]:
    bad.append("unplanned_bytes did not shrink with the dims")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF
else
    fail "kiln check char_gpt -D B=1 -D T=16 failed: $(head -n 5 small.err)"
fi
# T beyond the learned positions' max_len (256) is refused, naming the layer
set +e
"$kiln" check "$src/examples/char_gpt.json" -D T=300 >/dev/null 2>long.err
status=$?
set -e
[[ $status -eq 1 ]] || fail "-D T=300 (> max_len 256): exit $status, expected 1"
grep -q 'char_gpt.json' long.err && grep -q 'layers\[1\]' long.err ||
    fail "-D T=300: the message does not name char_gpt.json and layers[1]: $(head -n 3 long.err)"

finish
