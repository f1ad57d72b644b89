//! The Mixtral-Instruct chat template, written out: the prompt of a chat for a model that has
//! no template of its own ([`crate::ChatTemplate`]).

/// One exchange of a chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// What the user said.
    pub user: String,
    /// `None` for the turn being answered.
    pub assistant: Option<String>,
}

/// The Mixtral-Instruct chat template (`mistralai/Mixtral-8x7B-Instruct-v0.1`):
/// `<s>[INST] user [/INST] answer</s>[INST] user [/INST]`. A system prompt, which the template
/// lacks, goes before the first user message as HF's later Mistral templates do.
pub fn mixtral_chat_prompt(system: Option<&str>, turns: &[Turn]) -> String {
    let mut prompt = String::from("<s>");
    for (i, turn) in turns.iter().enumerate() {
        let user = match (i, system) {
            (0, Some(system)) if !system.is_empty() => format!("{system}\n\n{}", turn.user),
            _ => turn.user.clone(),
        };
        prompt.push_str(&format!("[INST] {} [/INST]", user.trim()));
        if let Some(answer) = &turn.assistant {
            prompt.push_str(&format!(" {}</s>", answer.trim()));
        }
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_matches_mixtral_instruct() {
        let turns = [
            Turn { user: "Hi".into(), assistant: Some("Hello!".into()) },
            Turn { user: "2+2?".into(), assistant: None },
        ];
        assert_eq!(mixtral_chat_prompt(None, &turns), "<s>[INST] Hi [/INST] Hello!</s>[INST] 2+2? [/INST]");
        assert_eq!(mixtral_chat_prompt(Some("Be brief."), &turns[1..]), "<s>[INST] Be brief.\n\n2+2? [/INST]");
    }
}
