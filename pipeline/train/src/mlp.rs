//! The multilayer perceptron, trained with burn: ReLU hidden layers and one logit out, Adam on
//! the binary cross-entropy, minibatches in a seeded order. burn's pure-Rust CPU backend (flex)
//! by default; the wgpu backend (Vulkan, Metal, DX12) with the `wgpu` feature. The trained
//! weights are copied into a plain [`Predictor::Mlp`], so serving never loads burn.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_sigmoid, relu};
use burn::tensor::{Device, Tensor, TensorData};
use lodestar_model::Predictor;
use lodestar_model::predictor::Dense;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::design::Rows;

/// Multilayer perceptron settings (burn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per gradient step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
}

/// Where the MLP trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// burn's pure-Rust CPU backend (flex).
    #[default]
    Cpu,
    /// burn's wgpu backend (Vulkan, Metal, DX12); needs the `wgpu` cargo feature.
    Wgpu,
}

impl std::str::FromStr for TrainDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(TrainDevice::Cpu),
            "wgpu" => Ok(TrainDevice::Wgpu),
            _ => Err(format!("unknown device {s:?}: expected cpu or wgpu")),
        }
    }
}

#[derive(Module, Debug)]
struct Net {
    layers: Vec<Linear>,
}

impl Net {
    fn new(inputs: usize, hidden: &[usize], device: &Device) -> Net {
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(1);
        Net {
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        h
    }
}

/// The burn device for `device`, with autodiff.
fn burn_device(device: TrainDevice) -> Result<Device, TrainError> {
    match device {
        TrainDevice::Cpu => Ok(Device::flex().autodiff()),
        #[cfg(feature = "wgpu")]
        TrainDevice::Wgpu => Ok(Device::wgpu(Default::default()).autodiff()),
        #[cfg(not(feature = "wgpu"))]
        TrainDevice::Wgpu => Err(TrainError::Config(
            "this build has no wgpu backend: rebuild with `--features wgpu`".into(),
        )),
    }
}

/// Held while a fit seeds the device's generator and draws its initial weights.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Fits the MLP on `d` (inputs standardised).
pub(crate) fn fit_mlp(
    d: Rows<'_>,
    p: &MlpParams,
    seed: u64,
    device: TrainDevice,
) -> Result<Predictor, TrainError> {
    let device = burn_device(device)?;
    let width = d.width();
    // burn draws the initial weights from the device's one seeded generator: fits seeding and
    // drawing at the same time (the families and weeks train in parallel, and so do tests)
    // would interleave their draws and lose the same-seed-same-model guarantee.
    let mut net = {
        let _held = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        device.seed(seed);
        let net = Net::new(width, &p.hidden, &device);
        // burn draws a parameter's initial values lazily, when it is first read: read them
        // here, under the lock, in the order the first forward pass reads them (each layer's
        // weight, then its bias), or another fit seeding meanwhile would change them.
        for layer in &net.layers {
            drop(layer.weight.val());
            if let Some(bias) = &layer.bias {
                drop(bias.val());
            }
        }
        net
    };
    let mut optimizer = AdamConfig::new().init();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..d.len()).collect();
    let mut xb: Vec<f32> = Vec::with_capacity(p.batch_size * width);
    let mut yb: Vec<f32> = Vec::with_capacity(p.batch_size);
    for _ in 0..p.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(p.batch_size) {
            xb.clear();
            yb.clear();
            for i in batch {
                xb.extend(d.row(*i).iter().map(|v| *v as f32));
                yb.push(if d.y(*i) { 1.0 } else { 0.0 });
            }
            let n = batch.len();
            let x = Tensor::<2>::from_data(TensorData::new(xb.clone(), [n, width]), &device);
            let y = Tensor::<2>::from_data(TensorData::new(yb.clone(), [n, 1]), &device);
            let z = net.forward(x);
            // Binary cross-entropy on logits: -y log σ(z) - (1 - y) log σ(-z).
            let loss = (y.clone() * log_sigmoid(z.clone())
                + (y.neg() + 1.0) * log_sigmoid(z.neg()))
            .mean()
            .neg();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optimizer.step(p.learning_rate, net, grads);
        }
    }
    let mut layers = Vec::with_capacity(net.layers.len());
    for l in &net.layers {
        let shape = l.weight.val().dims();
        let weights = l
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| TrainError::Fit(format!("reading MLP weights: {e:?}")))?;
        let bias = match &l.bias {
            Some(b) => b
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .map_err(|e| TrainError::Fit(format!("reading MLP bias: {e:?}")))?,
            None => vec![0.0; shape[1]],
        };
        layers.push(Dense {
            inputs: shape[0],
            outputs: shape[1],
            weights,
            bias,
        });
    }
    Ok(Predictor::Mlp { layers })
}

#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests {
    use super::*;
    use crate::design::tests::toy;
    use crate::metrics::roc_auc;

    /// The GPU path, run where a Vulkan driver exists (on a CPU-only machine, Mesa's lavapipe:
    /// `.ci/run` installs Debian's `mesa-vulkan-drivers` and runs this with `--features wgpu`).
    #[test]
    fn the_mlp_trains_on_wgpu_as_on_the_cpu() {
        let (train, test) = (toy(1500, 11), toy(500, 12));
        let p = MlpParams {
            hidden: vec![16, 8],
            epochs: 6,
            batch_size: 64,
            learning_rate: 2e-3,
        };
        let auc = |m: &Predictor| {
            let s: Vec<f64> = (0..test.rows())
                .map(|i| m.probability(test.row(i)))
                .collect();
            roc_auc(&s, &test.y)
        };
        let gpu = fit_mlp(Rows::all(&train), &p, 5, TrainDevice::Wgpu).unwrap();
        let cpu = fit_mlp(Rows::all(&train), &p, 5, TrainDevice::Cpu).unwrap();
        gpu.check(3).unwrap();
        let (a, b) = (auc(&gpu), auc(&cpu));
        assert!(a > 0.85, "wgpu AUC {a}");
        assert!((a - b).abs() < 0.03, "wgpu AUC {a} vs cpu {b}");
    }
}
