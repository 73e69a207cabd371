//! Seeded parameter initialisation: every random weight of a model is drawn from a stream keyed
//! by the job's seed and the parameter's path in the model, never from the backend's RNG.
//!
//! Why not Burn's initialisers: they draw from the backend's one process-wide RNG, lazily, at a
//! parameter's first use. Two jobs that share a process (`worker --slots 2`) then take turns on
//! one stream, and the weights a job starts from depend on what else runs beside it. Keying each
//! parameter by its path also makes the draws independent of which other modules exist, so at one
//! seed the backbone starts from the same weights whatever the loss (the `ce` and `bce` heads are
//! extra paths, not extra draws on a shared stream).
//!
//! The distributions are Burn's defaults for the modules we use, so training behaves as before:
//! `Conv2d` and `Linear` weights and biases `U(−k, k)` with `k = 1/√fan_in` (Kaiming-uniform with
//! gain 1/√3), fan-in = `in/groups · kh · kw` for a convolution and `d_input` for a linear layer.
//! `PRelu` slopes are constants and keep their configured value.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// Re-initialises every float parameter of `module` from `seed`; `root` names the module's place
/// in the model (it is part of each parameter's key). Errors name a parameter whose module has no
/// rule here, so a new layer type cannot silently fall back to the shared RNG.
pub(crate) fn seeded<B: Backend, M: Module<B>>(
    module: M,
    root: &str,
    seed: u64,
    device: &B::Device,
) -> Result<M, String> {
    let mut init = SeededInit {
        seed,
        device: device.clone(),
        path: vec![(root.to_owned(), String::new())],
        fan_in: None,
        error: None,
    };
    let module = module.map(&mut init);
    match init.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// The parameter stream of `path` under `seed`: SHA-256 of both, so streams of different paths
/// are unrelated and adding a module never shifts another's values.
fn param_rng(seed: u64, path: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(b"latentsweep/init/v1\0");
    h.update(seed.to_le_bytes());
    h.update(path.as_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

struct SeededInit<B: Backend> {
    seed: u64,
    device: B::Device,
    /// `(field or variant name, type of the module that holds it)` from the root down.
    path: Vec<(String, String)>,
    /// Fan-in of the last weight seen, for the bias that follows it in the same module.
    fan_in: Option<usize>,
    error: Option<String>,
}

impl<B: Backend> SeededInit<B> {
    fn path_string(&self) -> String {
        let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }

    /// `U(−k, k)` values for a parameter of `dims`, or None when the parameter is not random.
    fn draw(&mut self, dims: &[usize]) -> Result<Option<Vec<f32>>, String> {
        let (name, holder) = self.path.last().cloned().unwrap_or_default();
        let fan_in = match (holder.as_str(), name.as_str(), dims) {
            ("Struct:Conv2d", "weight", [_, c, kh, kw]) => Some(c * kh * kw),
            ("Struct:Linear", "weight", [d_in, _]) => Some(*d_in),
            ("Struct:Conv2d" | "Struct:Linear", "bias", [_]) => None,
            ("Struct:PRelu", "alpha", _) => return Ok(None),
            _ => {
                return Err(format!(
                    "no seeded initialiser for parameter `{}` ({holder}, shape {dims:?})",
                    self.path_string()
                ));
            }
        };
        let fan_in = match fan_in {
            Some(f) => {
                self.fan_in = Some(f);
                f
            }
            None => self
                .fan_in
                .ok_or_else(|| format!("bias `{}` comes before its weight", self.path_string()))?,
        };
        let k = (1.0 / fan_in.max(1) as f64).sqrt() as f32;
        let mut rng = param_rng(self.seed, &self.path_string());
        let n = dims.iter().product();
        Ok(Some((0..n).map(|_| rng.random_range(-k..=k)).collect()))
    }
}

impl<B: Backend> ModuleMapper<B> for SeededInit<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        // The shape without running the lazy initialiser (which would draw from the backend's RNG).
        let dims = param.lazy_shape().to_vec();
        match self.draw(&dims) {
            Ok(Some(values)) => {
                let t = Tensor::<B, D>::from_data(TensorData::new(values, dims), &self.device);
                Param::initialized(param.id, t.require_grad())
            }
            Ok(None) => param,
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::ModuleVisitor;
    use burn::nn::{Linear, LinearConfig};

    /// Every float parameter's values, in visiting order.
    pub(crate) fn param_values<B: Backend, M: Module<B>>(m: &M) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
                self.0.push(p.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        c.0
    }

    #[test]
    fn same_seed_same_values_whatever_the_backend_rng() {
        let d = Default::default();
        <Flex as Backend>::seed(&d, 1);
        let a = seeded::<Flex, Linear<Flex>>(LinearConfig::new(16, 4).init(&d), "fc", 7, &d);
        <Flex as Backend>::seed(&d, 2);
        let b = seeded::<Flex, Linear<Flex>>(LinearConfig::new(16, 4).init(&d), "fc", 7, &d);
        let (a, b) = (param_values(&a.unwrap()), param_values(&b.unwrap()));
        assert_eq!(a, b);
        let c = seeded::<Flex, Linear<Flex>>(LinearConfig::new(16, 4).init(&d), "fc", 8, &d);
        assert_ne!(
            a,
            param_values(&c.unwrap()),
            "another seed draws other values"
        );
    }

    #[test]
    fn values_follow_burns_default_bounds() {
        let d = Default::default();
        let fc = seeded::<Flex, Linear<Flex>>(LinearConfig::new(64, 8).init(&d), "fc", 0, &d);
        let k = 1.0 / 8.0; // 1/√64
        for values in param_values(&fc.unwrap()) {
            assert!(values.iter().all(|v| v.abs() <= k));
            // Uniform on [−k, k]: values reach out towards both ends.
            let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.7 * k, "max |v| {max} of U(−{k}, {k})");
        }
    }

    #[test]
    fn every_loss_starts_from_the_same_backbone() {
        use crate::train::model::{MetricNet, ModelShape};
        use proto::{Loss, Network};
        let d = Default::default();
        for network in [
            Network::EmbeddingNet,
            Network::KochSiamese,
            Network::LenetHadsell,
        ] {
            let backbone = |loss: Loss, seed: u64| {
                let shape = ModelShape {
                    network,
                    loss,
                    height: 28,
                    width: 28,
                    dim: 4,
                    n_classes: 10,
                    normalize: false,
                };
                let net = MetricNet::<Flex>::new(&shape, seed, &d).unwrap();
                if loss == Loss::Bce {
                    let head = param_values(net.bce_head.as_ref().unwrap());
                    assert!(head[0].iter().all(|&w| w <= 0.0), "bce weights start ≤ 0");
                }
                param_values(&net.backbone)
            };
            let ce = backbone(Loss::Ce, 3);
            for loss in [Loss::Bce, Loss::Contrastive, Loss::Triplet] {
                assert_eq!(backbone(loss, 3), ce, "{network}: {loss} vs ce");
            }
            assert_ne!(backbone(Loss::Ce, 4), ce, "{network}: the seed matters");
        }
    }
}
