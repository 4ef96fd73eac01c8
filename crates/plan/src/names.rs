//! How a user's spelling of a model, chip or stack name meets the planner's: model names as
//! Hugging Face and papers write them (`meta-llama/Llama-3.1-70B-Instruct`, `Qwen2.5-72B`,
//! `Mixtral-8x7B-v0.1`) resolve to the preset of the same shapes, and an unknown name of any kind
//! gets the closest known one as a suggestion in its error.

/// Suffixes naming a checkpoint's variant, not its shapes: a chat or instruction tune, a
/// Hugging Face conversion, a version tag (weights change, widths do not).
const VARIANT_SUFFIXES: &[&str] = &["-instruct", "-chat", "-hf", "-base", "-it", "-pt", "-v0.1", "-v0.2", "-v0.3"];

/// Llama release names whose shapes are an earlier preset's: Llama 3.1 8B/70B/405B and 3.3 70B
/// change the context length and the RoPE scaling of Llama 3, not a width.
const SAME_SHAPES: &[(&str, &str)] =
    &[("llama-3.1", "llama3"), ("llama3.1", "llama3"), ("llama-3.3", "llama3"), ("llama3.3", "llama3")];

/// Hugging Face names whose version changes the shape their de-suffixed name would give:
/// Mistral 7B v0.1 (base and instruct) slides a 4,096-token window over every layer (its
/// config.json's `sliding_window`), v0.2 and v0.3 do not.
const VERSIONED: &[(&str, &str)] =
    &[("mistral-7b-v0.1", "mistral-7b-sliding"), ("mistral-7b-instruct-v0.1", "mistral-7b-sliding")];

/// The preset a versioned Hugging Face name (`mistralai/Mistral-7B-v0.1`) stands for where its
/// version changes the shape (`VERSIONED`); none for every other name.
pub fn versioned_preset(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let last = lower.rsplit('/').next().unwrap_or(&lower);
    VERSIONED.iter().find(|(hf, _)| *hf == last).map(|(_, preset)| *preset)
}

/// The key two spellings of one model share: lower case, without an organisation prefix
/// (`org/`), a `meta-` prefix or variant suffixes, Llama 3.1/3.3 read as Llama 3, and without the
/// separators `-`, `_`, `.` and spaces (`Llama-2-7b` and `llama2-7b` meet at `llama27b`).
pub fn model_key(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let mut s = lower.rsplit('/').next().unwrap_or(&lower).to_string();
    if let Some(rest) = s.strip_prefix("meta-") {
        s = rest.to_string();
    }
    while let Some(rest) = VARIANT_SUFFIXES.iter().find_map(|suffix| s.strip_suffix(suffix)) {
        s = rest.to_string();
    }
    for (from, to) in SAME_SHAPES {
        if let Some(rest) = s.strip_prefix(from) {
            s = format!("{to}{rest}");
        }
    }
    s.chars().filter(|c| !matches!(c, '-' | '_' | '.' | ' ')).collect()
}

/// The known name closest to `given` by edit distance, if it is close enough to be a slip
/// (at most a third of the longer name's characters differ): the "did you mean" of an error.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let g = given.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(&g, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d > 0 && 3 * d <= g.len().max(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Known names of which `given` is a whole dash-separated part (`nemo` in `nemo-2025`, `fsdp` in
/// `pytorch-fsdp`, `megatron-core` in `megatron-core-2024`): a family or framework typed without
/// the version the names carry.
pub fn containing<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let g = given.trim().to_ascii_lowercase();
    if g.is_empty() {
        return Vec::new();
    }
    known
        .into_iter()
        .filter(|k| {
            let k = k.to_ascii_lowercase();
            k != g && format!("-{k}-").contains(&format!("-{g}-"))
        })
        .collect()
}

/// How many names [`suggestion`] lists before it stops.
const SUGGESTIONS: usize = 6;

/// ` (did you mean 'NAME'?)` for the known names `given` is a part of ([`containing`]; the first
/// six and how many more), else for the closest known name ([`closest`]), or nothing.
pub fn suggestion<'a>(given: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    let family = containing(given, known.clone());
    match family.as_slice() {
        [] => closest(given, known).map(|k| format!(" (did you mean '{k}'?)")).unwrap_or_default(),
        [one] => format!(" (did you mean '{one}'?)"),
        many => {
            let shown: Vec<String> = many.iter().take(SUGGESTIONS).map(|k| format!("'{k}'")).collect();
            let more = many.len().saturating_sub(SUGGESTIONS);
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!(" (did you mean one of {}{more}?)", shown.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_spellings_meet_the_preset_names() {
        for (hf, preset) in [
            ("meta-llama/Llama-3.1-70B-Instruct", "llama3-70b"),
            ("Meta-Llama-3-8B", "llama3-8b"),
            ("Llama-3.3-70B-Instruct", "llama3-70b"),
            ("meta-llama/Llama-2-7b-hf", "llama2-7b"),
            ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b"),
            ("Qwen/Qwen2.5-72B-Instruct", "qwen2.5-72b"),
            ("deepseek-ai/DeepSeek-V2-Lite-Chat", "deepseek-v2-lite"),
            ("openai/gpt-oss-120b", "gpt-oss-120b"),
            ("Llama-3.2-1B", "llama3.2-1b"),
        ] {
            assert_eq!(model_key(hf), model_key(preset), "{hf}");
        }
        // Llama 3.2's small models have shapes of their own.
        assert_ne!(model_key("Llama-3.2-3B"), model_key("llama3-3b"));
    }

    #[test]
    fn a_slip_gets_the_nearest_name_and_a_stranger_none() {
        let known = ["h100", "h200", "mi300x", "gaudi2"];
        assert_eq!(closest("mi300", known), Some("mi300x"));
        assert_eq!(closest("tpu-v9", known), None);
        assert_eq!(suggestion("gaudi3", known), " (did you mean 'gaudi2'?)");
        assert_eq!(suggestion("blackwell", known), "");
    }

    #[test]
    fn a_family_typed_without_its_version_gets_the_names_it_is_part_of() {
        let known = ["nemo-2023", "nemo-2025", "nemo-2025-flex", "megatron-core-2024", "pytorch-fsdp", "unknown"];
        // Edit distance found nothing for these, or the wrong stack (`megatron-core` ->
        // `megatron-2021`).
        assert_eq!(suggestion("nemo", known), " (did you mean one of 'nemo-2023', 'nemo-2025', 'nemo-2025-flex'?)");
        assert_eq!(suggestion("megatron-core", known), " (did you mean 'megatron-core-2024'?)");
        assert_eq!(suggestion("FSDP", known), " (did you mean 'pytorch-fsdp'?)");
        // A part of a part is no match (`em` is inside `nemo`, not a part of it).
        assert!(containing("em", known).is_empty());
        let many = ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6", "a-7", "a-8"];
        assert!(suggestion("a", many).ends_with("'a-6' and 2 more?)"), "{}", suggestion("a", many));
    }
}
