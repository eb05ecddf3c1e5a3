# Sourced by the gpu_*.sh scripts: stop at once when .devdata/ did not travel (carry it), instead of
# every run failing quietly and the call returning no records. MODEL: the base model (default MiniLM-L6);
# NEED="FILE ...": more paths to require.
for need in ${MODEL:-.devdata/minilm-l6-h384-fp16}/config.json ${NEED:-}; do
  [ -e "$need" ] || { echo "error: $need is missing: copy it from ../shared (README: GPU results) and carry .devdata" >&2; exit 2; }
done
