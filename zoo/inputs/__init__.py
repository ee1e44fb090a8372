"""Model inputs: view modes and preprocessing, the placeholder layout, the text tokenizer,
prompts, the processor, grounding tags."""
