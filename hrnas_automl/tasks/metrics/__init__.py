"""Task metrics over plain tensors and COCO records: ``segmentation`` (confusion matrix, mIoU, pixel accuracy),
``keypoints`` (OKS AP through pycocotools, PCK)."""
