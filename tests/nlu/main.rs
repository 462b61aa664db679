//! The NLU library against the real base model: encoder numerics, batching
//! invariance, and the inference engine's behaviour under load.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use bankbot_models::ModelError;
use bankbot_models::artifact::Artifact;
use bankbot_models::base::BaseModelDir;
use bankbot_models::bert::NormKind;
use bankbot_models::encoder::{Encoder, FeatureSpec, Precision, pad_batch};
use bankbot_models::engine::{Engine, EngineConfig};
use bankbot_models::finetune::{FineTuneConfig, fine_tune};
use bankbot_models::train::{self, LabelledText, TrainConfig};
use candle_core::Device;
use common::*;

/// The serving encoder (int8).
fn encoder() -> Encoder {
    Encoder::load(&base_model(), &Device::Cpu, Precision::Int8).unwrap()
}

/// candle's f32 encoder, the reference.
fn reference() -> Encoder {
    Encoder::load(&base_model(), &Device::Cpu, Precision::F32).unwrap()
}

/// A model trained on the small catalogue, shared by the engine tests.
fn small_model() -> &'static Artifact {
    static A: OnceLock<Artifact> = OnceLock::new();
    A.get_or_init(|| {
        let cat = small_catalogue();
        let (c, _) = bankbot::catalogue::load_dir(cat.path()).unwrap();
        let data: Vec<LabelledText> = c
            .labelled()
            .into_iter()
            .map(|(t, l)| LabelledText::new(t, l))
            .collect();
        train::train(
            &encoder(),
            &data,
            None,
            &TrainConfig::default(),
            None,
            |_| {},
        )
        .unwrap()
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

#[test]
fn sentence_embeddings_group_paraphrases_in_both_encoders() {
    for e in [encoder(), reference()] {
        let p = FeatureSpec::last(e.num_layers(), e.precision());
        let texts = [
            "I lost my card",
            "my card has gone missing",
            "what's the weather like",
        ];
        let v = e.embed_all(&texts, &p, 512, |_| {}).unwrap();
        assert!(
            (cosine(&v[0], &v[0]) - 1.0).abs() < 1e-4,
            "features are unit length"
        );
        assert!(
            cosine(&v[0], &v[1]) > 0.7,
            "{:?} paraphrases: {}",
            e.precision(),
            cosine(&v[0], &v[1])
        );
        assert!(
            cosine(&v[0], &v[2]) < 0.3,
            "{:?} unrelated: {}",
            e.precision(),
            cosine(&v[0], &v[2])
        );
    }
}

#[test]
fn batch_neighbours_do_not_change_features() {
    for e in [encoder(), reference()] {
        let p = FeatureSpec {
            layers: vec![0, 2, 4, 6],
            precision: e.precision(),
        };
        let short = e.tokenize("card stolen").unwrap();
        let long = e
            .tokenize("I was on the bus this morning and when I got off my wallet with all my cards was gone")
            .unwrap();
        let alone = e.embed_tokens(&[&short], &p).unwrap();
        let batched = e.embed_tokens(&[&long, &short, &long], &p).unwrap();
        let max_diff = alone[0]
            .iter()
            .zip(&batched[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-5,
            "{:?}: batching changed the features by {max_diff}",
            e.precision()
        );
    }
}

#[test]
fn int8_features_track_the_f32_reference() {
    let (fast, exact) = (encoder(), reference());
    let rows = bankbot::evalset::load(&repo_root().join("training-data/heldout.yaml")).unwrap();
    let texts: Vec<&str> = rows.iter().step_by(4).map(|r| r.text.as_str()).collect();
    let spec = |e: &Encoder| FeatureSpec {
        layers: vec![0, 2, 4, 6],
        precision: e.precision(),
    };
    let a = fast.embed_all(&texts, &spec(&fast), 2048, |_| {}).unwrap();
    let b = exact
        .embed_all(&texts, &spec(&exact), 2048, |_| {})
        .unwrap();
    let sims: Vec<f32> = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).collect();
    let mean = sims.iter().sum::<f32>() / sims.len() as f32;
    let worst = sims.iter().cloned().fold(1.0f32, f32::min);
    assert!(
        mean > 0.995 && worst > 0.98,
        "int8 vs f32 cosine: mean {mean}, worst {worst}"
    );
    // A spec for the other precision is refused rather than silently mixed.
    assert!(
        fast.embed_all(&texts[..1], &spec(&exact), 2048, |_| {})
            .is_err()
    );
}

#[test]
fn the_differentiable_encoder_matches_the_fused_one() {
    let base = BaseModelDir::open(&base_model()).unwrap();
    let fused = Encoder::load_with(&base, &Device::Cpu, NormKind::Fused, None).unwrap();
    let slow = Encoder::load_with(&base, &Device::Cpu, NormKind::Differentiable, None).unwrap();
    let toks = [
        fused.tokenize("how do I reset my pin").unwrap(),
        fused.tokenize("hi").unwrap(),
    ];
    let refs: Vec<_> = toks.iter().collect();
    let (ids, types, mask) = pad_batch(&refs, &Device::Cpu).unwrap();
    let a = fused.bert().unwrap().forward(&ids, &types, &mask).unwrap();
    let b = slow.bert().unwrap().forward(&ids, &types, &mask).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let d = (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-3, "hidden states differ by {d}");
    }
}

#[test]
fn the_engine_matches_direct_prediction_under_concurrency() {
    let a = small_model();
    let texts = [
        "I lost my card",
        "when do you open on saturday",
        "how much is in my account",
        "play a song for me",
    ];
    let direct = train::predict_texts(&encoder(), &a.model, &texts, 3, 2048).unwrap();
    let engine = Arc::new(
        Engine::start(
            encoder(),
            a.model.clone(),
            EngineConfig {
                top_k: 3,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| (i + t) % 4)
                    .map(|k| (k, engine.classify_blocking(texts[k]).unwrap()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut max_batch = 0;
    for h in handles {
        for (k, c) in h.join().unwrap() {
            assert_eq!(
                c.prediction.intent.name, direct[k].intent.name,
                "{}",
                texts[k]
            );
            assert!((c.prediction.intent.confidence - direct[k].intent.confidence).abs() < 1e-4);
            max_batch = max_batch.max(c.batch_size);
        }
    }
    assert!(
        max_batch > 1,
        "concurrent requests were never batched together"
    );
    assert_eq!(direct[3].intent.name, "out_of_scope");
}

#[test]
fn the_engine_refuses_work_it_cannot_queue() {
    let a = small_model();
    let engine = Engine::start(
        encoder(),
        a.model.clone(),
        EngineConfig {
            queue_capacity: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(engine.submit("   "), Err(ModelError::EmptyText)));
    // Flood the queue faster than it can be served: some submissions must be refused at once.
    let mut receivers = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        match engine
            .submit("where is my nearest branch and when does it open on a saturday afternoon")
        {
            Ok(rx) => receivers.push(rx),
            Err(ModelError::Overloaded { capacity }) => {
                assert_eq!(capacity, 2);
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(refused > 0, "a full queue must refuse, not wait");
    for rx in receivers {
        assert_eq!(
            rx.blocking_recv().unwrap().unwrap().prediction.intent.name,
            "branch_hours"
        );
    }
}

#[test]
fn fine_tuning_trains_only_the_top_layers_and_lowers_the_loss() {
    let base = BaseModelDir::open(&base_model()).unwrap();
    let cat = small_catalogue();
    let (c, _) = bankbot::catalogue::load_dir(cat.path()).unwrap();
    let data: Vec<LabelledText> = c
        .labelled()
        .into_iter()
        .map(|(t, l)| LabelledText::new(t, l))
        .collect();
    let cfg = FineTuneConfig {
        layers: 1,
        epochs: 3,
        learning_rate: 1e-4,
        ..FineTuneConfig::default()
    };
    let tuned = fine_tune(&base, &data, &[0, 2, 4, 6], &cfg, &Device::Cpu, |_| {}).unwrap();
    // Exactly the 16 tensors of the last layer are trained.
    assert_eq!(tuned.tensors.len(), 16);
    assert!(
        tuned
            .tensors
            .keys()
            .all(|k| k.starts_with("encoder.layer.5.")),
        "{:?}",
        tuned.tensors.keys()
    );
    // They moved away from the base weights: gradients reached the encoder
    // (with candle's fused layer norm they would silently not).
    let original = candle_core::safetensors::load(base.weights_path(), &Device::Cpu).unwrap();
    for name in [
        "encoder.layer.5.attention.self.query.weight",
        "encoder.layer.5.output.LayerNorm.weight",
    ] {
        let d = (&tuned.tensors[name] - &original[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() > 1e-6,
            "{name} did not change"
        );
    }
    let l = &tuned.epoch_losses;
    assert_eq!(l.len(), 3);
    assert!(l[2] < l[0], "loss did not fall: {l:?}");
    // The tuned encoder (int8 too) applies the new tensors.
    let plain = encoder();
    let tuned_enc =
        Encoder::load_tuned(&base_model(), &Device::Cpu, Precision::Int8, Some(&tuned)).unwrap();
    let spec = FeatureSpec {
        layers: vec![6],
        precision: Precision::Int8,
    };
    let a = plain
        .embed_all(&["where is the closest branch"], &spec, 512, |_| {})
        .unwrap();
    let b = tuned_enc
        .embed_all(&["where is the closest branch"], &spec, 512, |_| {})
        .unwrap();
    assert!(
        cosine(&a[0], &b[0]) < 0.9999,
        "fine-tuned features equal the base ones"
    );
}
