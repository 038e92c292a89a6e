"""HRNetV2-W48 on LIP (20 classes): 473x473 crops, lr 0.007, batch 40, 110K steps; flips swap
the left/right part labels."""

from configs import seg_cityscapes


def get_config():
  c = seg_cityscapes.get_config()
  c.data.name = 'lip'
  c.data.crop_size = (473, 473)
  c.data.eval_size = (512, 512)
  c.loss.class_weights = ()
  c.optimizer.lr = 0.007
  c.batch_size = 40
  c.total_steps = 110000
  c.eval.crop_size = (473, 473)
  return c
