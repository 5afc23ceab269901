"""Metrics and benchmark harnesses for personalized generation.

Import the module you need; each loads its heavy dependencies (torch, transformers, nltk...) on
first use:

- `text_metrics`: ROUGE-1/L, BLEU, METEOR, BERTScore; accuracy, macro F1, MAE, RMSE (LaMP tasks);
- `ranking_metrics`: NDCG@k, HR@k, recall@k, MRR (recommendation and user modeling);
- `image_metrics`: CLIP-I, CLIP-T, DINO-I, FID, KID, LPIPS, SSIM, PSNR, MS-SSIM;
- `media_metrics`: video CLIP-I/T and temporal consistency; Fréchet audio distance, speaker
  similarity, CLAP score; Chamfer distance, volume IoU, normal consistency for 3D.

docs/evaluation.md says what each number means and how each is checked.
"""
