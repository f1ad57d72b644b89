use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};

use crate::nn::functional::{log_softmax, softmax};

/// Knowledge distillation (Hinton et al. 2015): `T² · KL(softmax(t / T) ‖ softmax(s / T))`,
/// the teacher's next-token distribution against the student's at temperature `T`, averaged
/// over every position. The `T²` keeps the gradient's scale independent of `T`, so the loss
/// mixes with the cross-entropy at one weight. The teacher is detached (it is not trained).
/// In f32 whatever the models' dtypes.
///
/// # Shapes
/// - `student_logits`, `teacher_logits`: `[B, S, V]`
/// - returns `[1]`
pub fn distillation_loss<B: Backend>(
    student_logits: Tensor<B, 3>,
    teacher_logits: Tensor<B, 3>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [b, s, v] = student_logits.dims();
    let scale = 1.0 / temperature;
    let student = student_logits.cast(FloatDType::F32).reshape([b * s, v]).mul_scalar(scale);
    let teacher = teacher_logits.detach().cast(FloatDType::F32).reshape([b * s, v]).mul_scalar(scale);
    let p = softmax(teacher.clone(), 1);
    let kl = (p * (log_softmax(teacher, 1) - log_softmax(student, 1))).sum_dim(1); // [B*S, 1]
    kl.mean().mul_scalar(temperature * temperature)
}
