//! Choosing the bot's replies for a classified message. Until the dialog
//! engine (issue 4) takes over, a turn is answered with one of the
//! recognised intent's `responses` from the catalogue, or the out-of-scope
//! reply; the reply varies with the turn number, so a customer asking twice
//! is not answered word for word the same.

use std::collections::HashMap;

use bankbot_models::classifier::Prediction;
use bankbot_models::metrics::OUT_OF_SCOPE;

use crate::catalogue::{Catalogue, Response};
use crate::settings::BotSettings;
use crate::store::{ConversationState, Reply};

#[derive(Debug, Clone)]
pub struct Responder {
    by_intent: HashMap<String, Vec<Response>>,
    out_of_scope: Vec<Response>,
    bot: BotSettings,
}

impl Responder {
    pub fn new(catalogue: &Catalogue, bot: BotSettings) -> Self {
        Self {
            by_intent: catalogue
                .intents
                .iter()
                .map(|i| (i.name.clone(), i.responses.clone()))
                .collect(),
            out_of_scope: catalogue
                .out_of_scope
                .as_ref()
                .map(|i| i.responses.clone())
                .unwrap_or_default(),
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
                OUT_OF_SCOPE => self.out_of_scope.is_empty(),
                l => self.by_intent.get(l).is_none_or(Vec::is_empty),
            })
            .map(str::to_owned)
            .collect()
    }

    /// The replies to one message and the conversation's state after it.
    /// `turn` is the number of earlier turns; `card_masked` adds the warning
    /// about sharing card numbers first.
    pub fn replies(
        &self,
        prediction: &Prediction,
        turn: u64,
        card_masked: bool,
    ) -> (Vec<Reply>, ConversationState) {
        let mut out = Vec::with_capacity(2);
        if card_masked {
            out.push(text_reply(&self.bot.card_number_warning));
        }
        let (pool, default) = if prediction.out_of_scope {
            (&self.out_of_scope, &self.bot.fallback)
        } else {
            (
                self.by_intent
                    .get(&prediction.intent.name)
                    .unwrap_or(&self.out_of_scope),
                &self.bot.no_response,
            )
        };
        match pick(pool, turn) {
            Some(r) => out.push(Reply {
                text: r.text.clone(),
                quick_replies: r.quick_replies.clone(),
            }),
            None => out.push(text_reply(default)),
        }
        (out, ConversationState::Active)
    }
}

fn pick(pool: &[Response], turn: u64) -> Option<&Response> {
    if pool.is_empty() {
        return None;
    }
    let i = usize::try_from(turn % pool.len() as u64).unwrap_or(0);
    pool.get(i)
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
    use crate::catalogue::{Intent, QuickReply, Source};
    use bankbot_models::classifier::IntentScore;

    fn intent(name: &str, responses: &[&str]) -> Intent {
        Intent {
            name: name.into(),
            description: None,
            examples: Vec::new(),
            responses: responses
                .iter()
                .map(|t| Response {
                    text: (*t).into(),
                    quick_replies: vec![QuickReply {
                        title: "Help".into(),
                        payload: "help".into(),
                    }],
                })
                .collect(),
            flow: None,
            source: Source {
                path: "x.yaml".into(),
                pos: crate::yaml::Pos { line: 1, col: 1 },
            },
        }
    }

    fn prediction(name: &str, oos: bool) -> Prediction {
        let score = IntentScore {
            name: name.into(),
            confidence: 0.9,
        };
        Prediction {
            intent: score.clone(),
            ranking: vec![score],
            out_of_scope: oos,
            oos_score: 0.0,
        }
    }

    #[test]
    fn answers_vary_by_turn_and_fall_back_to_settings() {
        let cat = Catalogue {
            intents: vec![intent("greet", &["Hi!", "Hello!"]), intent("silent", &[])],
            out_of_scope: Some(intent("out_of_scope", &["Not my job."])),
        };
        let r = Responder::new(&cat, BotSettings::default());
        let first = r.replies(&prediction("greet", false), 0, false).0;
        let second = r.replies(&prediction("greet", false), 1, false).0;
        assert_eq!(first[0].text, "Hi!");
        assert_eq!(first[0].quick_replies[0].payload, "help");
        assert_eq!(second[0].text, "Hello!");
        assert_eq!(
            r.replies(&prediction("x", true), 0, false).0[0].text,
            "Not my job."
        );
        assert_eq!(
            r.replies(&prediction("silent", false), 0, false).0[0].text,
            BotSettings::default().no_response
        );
        let warned = r.replies(&prediction("greet", false), 0, true).0;
        assert_eq!(warned.len(), 2);
        assert_eq!(warned[0].text, BotSettings::default().card_number_warning);
        assert_eq!(
            r.intents_without_responses(["greet", "silent"]),
            vec!["silent"]
        );

        let bare = Catalogue {
            intents: vec![intent("greet", &["Hi!"])],
            out_of_scope: None,
        };
        let r = Responder::new(&bare, BotSettings::default());
        assert_eq!(
            r.replies(&prediction("x", true), 0, false).0[0].text,
            BotSettings::default().fallback
        );
    }
}
