//! The service's own texts around the dialog: the warning when card
//! numbers were masked, and a start-up check that every intent the model
//! predicts has something to say (a flow or responses). Replies themselves
//! come from the dialog engine (`bankbot-dialog`), whose FAQ answers vary
//! with the turn number.

use std::collections::HashMap;

use bankbot_models::metrics::OUT_OF_SCOPE;

use crate::catalogue::Catalogue;
use crate::settings::BotSettings;
use crate::store::Reply;

#[derive(Debug, Clone)]
pub struct Responder {
    /// Intent -> whether it has a flow or responses.
    answers: HashMap<String, bool>,
    out_of_scope_answers: bool,
    bot: BotSettings,
}

impl Responder {
    pub fn new(catalogue: &Catalogue, bot: BotSettings) -> Self {
        Self {
            answers: catalogue
                .intents
                .iter()
                .map(|i| (i.name.clone(), i.flow.is_some() || !i.responses.is_empty()))
                .collect(),
            out_of_scope_answers: catalogue
                .out_of_scope
                .as_ref()
                .is_some_and(|i| !i.responses.is_empty()),
            bot,
        }
    }

    /// Intents the model may predict that have no reply written yet.
    pub fn intents_without_responses<'a>(
        &self,
        labels: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        labels
            .into_iter()
            .filter(|l| match *l {
                OUT_OF_SCOPE => !self.out_of_scope_answers,
                l => !self.answers.get(l).copied().unwrap_or(false),
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Responder {
    /// The warning sent when card numbers were masked out of a message.
    pub fn card_warning(&self) -> Reply {
        text_reply(&self.bot.card_number_warning)
    }
}

fn text_reply(text: &str) -> Reply {
    Reply {
        text: text.to_owned(),
        quick_replies: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Intent, Response, Source};

    fn intent(name: &str, responses: &[&str]) -> Intent {
        Intent {
            name: name.into(),
            description: None,
            examples: Vec::new(),
            responses: responses
                .iter()
                .map(|t| Response {
                    text: (*t).into(),
                    quick_replies: Vec::new(),
                })
                .collect(),
            flow: None,
            source: Source {
                path: "x.yaml".into(),
                pos: crate::yaml::Pos { line: 1, col: 1 },
            },
        }
    }

    #[test]
    fn the_card_warning_and_intents_with_nothing_to_say() {
        let cat = Catalogue {
            intents: vec![intent("greet", &["Hi!", "Hello!"]), intent("silent", &[])],
            out_of_scope: Some(intent("out_of_scope", &["Not my job."])),
        };
        let r = Responder::new(&cat, BotSettings::default());
        assert_eq!(
            r.card_warning().text,
            BotSettings::default().card_number_warning
        );
        assert_eq!(
            r.intents_without_responses(["greet", "silent", OUT_OF_SCOPE]),
            vec!["silent"]
        );
    }
}
