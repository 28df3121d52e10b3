"""The keys each tool reads, so a key fitplan does not map is reported as ignored (the tool knows it; it does not
change memory, or fitplan says why not) or unknown (a typo, or a newer version). Generated from the tools'
sources (dataclass and pydantic fields) for the versions named; a key missing here is only reported, never fatal."""


# axolotl 0.19 (src/axolotl/utils/schemas/*.py, src/axolotl/integrations/*/args.py)
AXOLOTL = frozenset("""
    accelerator_config activation_checkpointing activation_dtype activation_offloading adam_beta1 adam_beta2
    adam_beta3 adam_epsilon adam_epsilon2 adapter adaptive_max_tokens added_tokens_overrides
    additional_special_tokens advantage_estimator alignment_coef api_key async_prefetch attn_implementation
    auto_find_batch_size auto_resume_from_checkpoints auto_wrap_policy axolotl_config_path backend base_model
    base_model_config base_url batch_flattening batch_size bench_dataset bench_split beta bf16 bfloat16
    bnb_config_kwargs bos_token capabilities ce_coef center_rewards_coefficient chat_template chat_template_jinja
    chat_template_kwargs chunked_cross_entropy chunked_cross_entropy_num_chunks cls_model_config comet_api_key
    comet_experiment_config comet_experiment_key comet_mode comet_online comet_project_name comet_workspace
    context_length context_parallel_size cosine_constant_lr_ratio cosine_min_lr_ratio cpo_alpha
    cpu_offload_pin_memory cpu_ram_efficient_loading curriculum_sampling cut_cross_entropy dataloader_drop_last
    dataloader_num_workers dataloader_pin_memory dataloader_prefetch_factor dataset_exact_deduplication
    dataset_keep_in_memory dataset_num_proc dataset_prepared_path dataset_processes dataset_shard_idx
    dataset_shard_num datasets ddp ddp_broadcast_buffers ddp_bucket_cap_mb ddp_find_unused_parameters ddp_timeout
    deepcompile deepspeed default_system_message dense_mixer device device_map diffusion dion_lr dion_momentum
    dion_rank_fraction dion_rank_multiple_of diversity_coef do_bench_eval do_causal_lm_eval dp_replicate_size
    dp_shard_size dpo_label_smoothing dpo_loss_type dpo_loss_weights dpo_padding_free dpo_use_liger_kernel
    dpo_use_weighting dsv4_bf16_all dsv4_fp4_grouped_mode dsv4_fp8_lora_kernel dsv4_fp8_nonexpert_mode
    dsv4_shared_mlp_lora_kernel dynamic_checkpoint eaft_alpha eaft_k eager_attention early_stopping_patience ebft
    embed_method embedding_lr embedding_lr_scale embeddings_skip_upcast env_capabilities eos_token eot_tokens eps
    epsilon epsilon_high eval_batch_size eval_causal_lm_metrics eval_sample_packing eval_sequence_len eval_steps
    eval_strategy evals_per_epoch excess_length_strategy experimental_skip_move_to_device expert_backend
    expert_parallel_backend expert_parallel_fallback_on_unsupported expert_parallel_num_nvl_bytes
    expert_parallel_num_rdma_bytes expert_parallel_size expert_parallel_token_capacity experts_implementation
    fake_quant_after_n_steps feature_layers final_state_dict_type fix_untrained_tokens flash_attention
    flash_attn_cross_entropy flash_attn_d512 flash_attn_fuse_mlp flash_optimum flex_attention
    flex_attn_compile_kwargs float16 float32 fp16 fp32_norm_classes fp32_norms fp8 fp8_enable_fsdp_float8_all_gather
    freeze_mm_modules fsdp fsdp_config fsdp_final_state_dict_type fsdp_version fused_attn_kernel future_timeout
    gc_collect_steps gc_steps gemma4_fp8_nonexpert gemma4_hybrid_attn_impl gemma4_nf4_nonexpert generate_max_len
    generate_samples generation_batch_size generation_do_sample generation_interval generation_kwargs
    generation_max_length generation_max_new_tokens generation_prompt_ratio generation_steps generation_temperature
    generation_top_k generation_top_p gptq gpu_memory_limit gradient_accumulation_steps gradient_checkpointing
    gradient_checkpointing_kwargs gradio_max_new_tokens gradio_server_name gradio_server_port gradio_share
    gradio_temperature gradio_title greater_is_better grokfast_alpha grokfast_lamb group_by_length group_size
    gt_length_multiplier hatchery heads_k_stride hf_mlflow_log_artifacts hf_use_auth_token hub_model_id hub_revision
    hub_strategy importance_sampling_level importance_weighting include_tkps include_tokens_per_second
    is_falcon_derived_model is_llama_derived_model is_mistral_derived_model is_preprocess is_qwen_derived_model
    jagged_restart_anneal_steps jagged_restart_steps jagged_restart_warmup_steps kd_alpha kd_beta kd_ce_alpha
    kd_normalize_topk kd_online_server kd_online_server_base_url kd_online_timeout kd_online_topk kd_temperature
    kd_temperature_min kd_trainer kto_desirable_weight kto_undesirable_weight large_head_attention layer_offloading
    learning_rate liger_cross_entropy liger_fused_linear_cross_entropy liger_glu_activation liger_kernel_impl
    liger_layer_norm liger_rms_norm liger_rms_norm_gated liger_rope liger_swiglu liger_use_token_scaling
    lisa_layers_attribute lisa_n_layers lisa_step_interval llama4_linearized_experts llmcompressor
    lm_eval_batch_size lm_eval_model lm_eval_post_train lm_eval_tasks load_best_model_at_end load_in_4bit
    load_in_8bit local_rank loftq_bits loftq_config log_completions logging_steps lora_alpha lora_alpha_pattern
    lora_dropout lora_embedding_kernel lora_fan_in_fan_out lora_mlp_kernel lora_model_dir lora_modules_to_save
    lora_o_kernel lora_on_cpu lora_qkv_kernel lora_r lora_rank lora_rank_pattern lora_target_linear
    lora_target_modules lora_target_parameters loraplus_lr_embedding loraplus_lr_ratio loss_fn loss_fn_config
    loss_type loss_watchdog_patience loss_watchdog_threshold low_cpu_mem_usage lr lr_div_factor lr_groups
    lr_quadratic_warmup lr_scheduler lr_scheduler_kwargs mask_token_id mask_token_str mask_truncated_completions
    max_completion_length max_grad_norm max_mask_ratio max_memory max_prompt_len max_sample_tokens max_steps
    mean_resizing_embeddings merge_lora merge_method metric_for_best_model micro_batch_size min_completion_prefix
    min_mask_ratio min_num_params min_p min_sample_len mixed_precision_policy mlflow_experiment_name mlflow_run_name
    mlflow_tracking_uri mode model_quantization_config model_quantization_config_kwargs modules moe_bnb_fast
    moe_dequant_chunk_size moe_grouped_backend mora mora_type multi_objective_aggregation multipack_real_batches
    n_samples_per_prompt name neftune_noise_alpha nemo_gym_auto_clone nemo_gym_auto_start nemo_gym_config_paths
    nemo_gym_datasets nemo_gym_dir nemo_gym_enabled nemo_gym_head_port nemo_gym_max_turns nemo_gym_model_name
    nemo_gym_multi_turn nemo_gym_run_timeout nemo_gym_server_timeout nemo_gym_verify_timeout noise_schedule
    nonexpert_quantization num_completions_to_print num_dataset_shards_to_save num_diffusion_steps num_epochs
    num_generation_samples num_generations num_iterations num_labels num_samples nvfp4_merge_aware
    nvfp4_merge_aware_start_step off_policy_mask_threshold offload offload_params optim_args optim_target_modules
    optimizer orpo_alpha otel_metrics_host otel_metrics_port output_dir pad_to_multiple_of pad_to_sequence_len
    pad_token peft peft_autocast_adapter_dtype peft_ensure_weight_tying peft_init_lora_weights
    peft_layer_replication peft_layers_pattern peft_layers_to_transform peft_trainable_token_indices peft_use_dora
    peft_use_rslora pipeline plugins pose_max_context_len pose_num_chunks pose_split_on_token_ids
    precompute_ref_log_probs prefetch_depth preprocess_iterable pretrain_multipack_attn
    pretrain_multipack_buffer_size pretraining_dataset pretraining_sample_concatenation process_reward_model
    processor_kwargs processor_type profiler_steps profiler_steps_start project_id push_dataset_to_hub qat
    qgalore_cos_threshold qgalore_gamma_proj qgalore_proj_bits qgalore_proj_group_size qgalore_proj_quant
    qgalore_proj_type qgalore_queue_size qgalore_rank qgalore_scale qgalore_update_proj_gap
    qlora_sharded_model_loading quantization quantize_embedding quantize_moe_experts ray_num_workers ray_run_name
    recipe recompute_layer_types ref_model_mixup_alpha ref_model_sync_steps reinit_weights relora relora_cpu_offload
    relora_prune_method relora_prune_ratio remove_unused_columns repetition_penalty replay_buffer_size
    replay_recompute_logps reroll_max_groups reroll_start_fraction reshard_after_forward
    resize_token_embeddings_to_32x resources_per_worker resume_from_checkpoint reward_funcs reward_model
    reward_num_workers reward_weights ring_attn_func rl rl_beta rl_coef rollout_func sage_attention sample_packing
    sample_packing_bin_size sample_packing_eff_est sample_packing_group_size sample_packing_mp_start_method
    sample_packing_sequentially sample_temperature save save_compressed save_first_step save_name_prefix
    save_only_model save_safetensors save_sliding_window save_steps save_strategy save_total_limit saves_per_epoch
    scale_rewards scaling_softmax scaling_softmax_bias scaling_softmax_factor sdp_attention sdpa_varlen seed
    selective_checkpointing sequence_len sequence_parallel_degree shrink_embeddings shuffle_before_merging_datasets
    shuffle_merged_datasets simpo_gamma skip_prepare_dataset skip_zero_advantage_batches special_tokens
    spectrum_model_name spectrum_top_fraction state_dict_type streaming streaming_min_groups
    streaming_multipack_buffer_size streaming_partial_batch strict stride swanlab_api_host swanlab_api_key
    swanlab_completion_log_interval swanlab_completion_max_buffer swanlab_description swanlab_experiment_name
    swanlab_lark_secret swanlab_lark_webhook_url swanlab_log_completions swanlab_log_model swanlab_mode
    swanlab_project swanlab_web_host swanlab_workspace sync_module_states sync_ref_model temperature
    tensor_parallel_size test_datasets tf32 tiled_mlp tiled_mlp_num_shards tiled_mlp_use_original_mlp
    tokenizer_config tokenizer_legacy tokenizer_save_jinja_files tokenizer_type tokenizer_use_fast
    tokenizer_use_mistral_common tokens top_k top_p torch_compile torch_compile_backend torch_compile_mode
    torch_compile_options torch_empty_cache_steps torchdistx_path total_num_tokens total_supervised_tokens
    trackio_project_name trackio_run_name trackio_space_id train_attn train_mlp train_on_inputs train_unembed
    trainer_cls transformer_layer_cls_to_wrap trl trust_remote_code unfrozen_parameters unk_token
    use_bias_correction_kl use_comet use_data_producer use_dsv4_kernels use_eaft use_glm_dsa_kernels use_kernels
    use_liger_loss use_mlflow use_mora use_onebitllms use_orig_params use_otel_metrics use_pose use_ray
    use_scattermoe use_sonicmoe use_swanlab use_tensorboard use_trackio use_vllm use_wandb use_whitening
    val_set_size vllm vllm_enable_sleep_mode vllm_guided_decoding_regex vllm_importance_sampling_cap
    vllm_importance_sampling_correction vllm_importance_sampling_mode vllm_lora_sync vllm_mode vllm_server_host
    vllm_server_port vllm_server_timeout vllm_sync_interval wandb_entity wandb_log_model wandb_mode wandb_name
    wandb_project wandb_run_id wandb_watch warmup_ratio warmup_steps weight_decay weight_dtype world_size
    xformers_attention
""".split())


# LLaMA-Factory 0.9.5 (src/llamafactory/hparams/*_args.py), beside Transformers' Seq2SeqTrainingArguments
LLAMA_FACTORY = frozenset("""
    adapter_folder adapter_name_or_path add_special_tokens add_tokens additional_target apollo_layerwise apollo_proj
    apollo_proj_type apollo_rank apollo_scale apollo_scale_front apollo_scale_type apollo_target
    apollo_update_interval asft_alpha audio_sampling_rate badam_mask_mode badam_mode badam_start_block
    badam_switch_interval badam_switch_mode badam_update_ratio badam_verbose batch_size block_diag_attn buffer_size
    cache_dir compute_accuracy compute_dtype create_new_adapter crop_to_patches cutoff_len data_shared_file_system
    dataset dataset_dir default_system device_map disable_gradient_checkpointing disable_shuffling do_sample
    double_quantization download_mode dpo_label_smoothing eaft_alpha early_stopping_steps enable_liger_kernel
    enable_thinking enable_torch_profiler eval_dataset eval_num_beams eval_on_each_dataset export_device export_dir
    export_hub_model_id export_legacy_format export_quantization_bit export_quantization_dataset
    export_quantization_maxlen export_quantization_nsamples export_size finetuning_type flash_attn fp8 fp8_backend
    fp8_enable_fsdp_float8_all_gather freeze_extra_modules freeze_language_model freeze_multi_modal_projector
    freeze_trainable_layers freeze_trainable_modules freeze_vision_tower galore_layerwise galore_proj_type
    galore_rank galore_scale galore_target galore_update_interval hf_hub_token hyper_parallel_args
    ignore_pad_token_for_loss image_do_pan_and_scan image_max_pixels image_min_pixels
    include_effective_tokens_per_second infer_backend infer_dtype init_special_tokens interleave_probs
    kt_expert_checkpoint_path kt_lora_expert_intermediate_size kt_lora_expert_num kt_use_lora_experts kt_weight_path
    kto_chosen_weight kto_rejected_weight lang ld_alpha length_penalty lora_alpha lora_dropout lora_rank lora_target
    loraplus_lr_embedding loraplus_lr_ratio low_cpu_mem_usage mask_history master_addr master_port max_length
    max_new_tokens max_samples media_dir mix_strategy mixture_of_depths model_max_length model_name_or_path
    model_revision module_dropout moe_aux_loss_coef ms_hub_token n_shot neat_packing new_special_tokens_config
    num_beams offload_folder oft_block_size oft_rank oft_target om_hub_token overwrite_cache overwrite_output_dir
    packing pissa_convert pissa_init pissa_iter plot_loss ppo_buffer_size ppo_epochs ppo_score_norm ppo_target
    ppo_whiten_rewards pref_bco_weight pref_beta pref_ftx pref_loss preprocessing_batch_size
    preprocessing_num_workers preserve_thinking print_param_status profile_modules profiler_active_steps
    profiler_output_dir profiler_profile_memory profiler_record_shapes profiler_repeat profiler_wait_steps
    profiler_warmup_steps profiler_with_stack pure_bf16 quantization_bit quantization_device_map quantization_method
    quantization_type ray_init_kwargs ray_num_workers ref_model ref_model_adapters ref_model_quantization_bit
    repetition_penalty resize_vocab reward_model reward_model_adapters reward_model_quantization_bit
    reward_model_type rope_scaling save_dir seed sglang_config sglang_lora_backend sglang_maxlen sglang_mem_fraction
    sglang_tp_size shift_attn simpo_gamma skip_special_tokens split_special_tokens stage streaming swanlab_api_key
    swanlab_lark_secret swanlab_lark_webhook_url swanlab_logdir swanlab_mode swanlab_project swanlab_run_name
    swanlab_workspace task task_dir temperature template tokenized_path tool_format top_k top_p train_from_scratch
    train_on_prompt trust_remote_code upcast_layernorm upcast_lmhead_output use_adam_mini use_apollo use_asft_loss
    use_audio_in_video use_badam use_dft_loss use_dora use_eaft_loss use_fast_tokenizer use_galore
    use_hyper_parallel use_kt use_kv_cache use_llama_pro use_mca use_muon use_reentrant_gc use_rslora use_swanlab
    use_unsloth use_unsloth_gc use_v1_kernels val_size video_fps video_max_pixels video_maxlen video_min_pixels
    vllm_config vllm_enforce_eager vllm_gpu_util vllm_max_lora_rank vllm_maxlen
""".split())


# Transformers 5.25 TrainingArguments / Seq2SeqTrainingArguments (training_args.py), with older names
TRAINER = frozenset("""
    _n_gpu accelerator_config activation_checkpointing activation_checkpointing_kwargs adafactor adam_beta1
    adam_beta2 adam_epsilon auto_find_batch_size average_tokens_across_devices batch_eval_metrics bf16
    bf16_full_eval data_seed dataloader_drop_last dataloader_in_order dataloader_multiprocessing_context
    dataloader_num_workers dataloader_persistent_workers dataloader_pin_memory dataloader_prefetch_factor
    dataset_batch_size ddp_backend ddp_broadcast_buffers ddp_bucket_cap_mb ddp_find_unused_parameters
    ddp_static_graph ddp_timeout debug deepspeed disable_tqdm do_eval do_predict do_train enable_jit_checkpoint
    eval_accumulation_steps eval_delay eval_do_concat_batches eval_on_start eval_steps eval_strategy
    eval_use_gather_object evaluation_strategy fp16 fp16_backend fp16_full_eval fsdp fsdp_config fsdp_min_num_params
    fsdp_transformer_layer_cls_to_wrap full_determinism generation_config generation_max_length generation_num_beams
    gradient_accumulation_steps gradient_checkpointing gradient_checkpointing_kwargs greater_is_better
    half_precision_backend hub_always_push hub_model_id hub_private_repo hub_revision hub_strategy hub_token
    ignore_data_skip include_for_metrics include_num_input_tokens_seen label_names label_smoothing_factor
    learning_rate length_column_name liger_kernel_config load_best_model_at_end local_rank log_level
    log_level_replica log_on_each_node logging_first_step logging_nan_inf_filter logging_steps logging_strategy
    lr_scheduler_kwargs lr_scheduler_type max_grad_norm max_seq_length max_steps metric_for_best_model
    neftune_noise_alpha no_cuda num_train_epochs optim optim_args optim_target_modules output_dir parallelism_config
    past_index per_device_eval_batch_size per_device_train_batch_size predict_with_generate prediction_loss_only
    project push_to_hub push_to_hub_token remove_unused_columns report_to restore_callback_states_from_checkpoint
    resume_from_checkpoint run_name save_on_each_node save_only_model save_steps save_strategy save_total_limit seed
    sharded_ddp skip_memory_metrics sortish_sampler tf32 torch_compile torch_compile_backend torch_compile_mode
    torch_dtype torch_empty_cache_steps tpu_num_cores trackio_bucket_id trackio_space_id trackio_static_space_id
    train_sampling_strategy use_cache use_cpu use_liger_kernel warmup_steps weight_decay
""".split())


# TRL 1.16 SFTConfig and ModelConfig (trl/trainer/sft_config.py, base_config.py, model_config.py)
TRL = frozenset("""
    activation_offloading assistant_only_loss attn_implementation bf16 bnb_4bit_quant_storage bnb_4bit_quant_type
    chars_per_token chat_template_path completion_only_loss dataset_batch_size dataset_kwargs dataset_num_proc
    dataset_text_field dtype eos_token eval_packing gradient_checkpointing learning_rate load_in_4bit load_in_8bit
    logging_steps lora_alpha lora_dropout lora_modules_to_save lora_r lora_target_modules lora_target_parameters
    lora_task_type loss_type lr_scheduler_kwargs max_length max_seq_length model_init_kwargs model_name_or_path
    model_revision num_of_sequences packing packing_strategy pad_to_multiple_of pad_token padding_free peft_config
    router_aux_loss_coef shuffle_dataset torch_dtype torch_empty_cache_steps truncation_mode trust_remote_code
    use_bnb_nested_quant use_dora use_liger_kernel use_peft use_rslora
""".split())


# TRL's ScriptArguments (trl/scripts/utils.py), which `trl sft --config` YAML files carry beside SFTConfig
TRL = TRL | frozenset("""
    dataset_name dataset_config dataset_train_split dataset_test_split dataset_streaming
    gradient_checkpointing_use_reentrant ignore_bias_buffers
""".split())


# TrainingArguments that Transformers 4.x had and 5 dropped or renamed: still in many configs
TRAINER = TRAINER | frozenset("""
    warmup_ratio overwrite_output_dir logging_dir use_mps_device include_tokens_per_second
    include_num_input_tokens_seen dataloader_persistent_workers ddp_backend jit_mode_eval use_ipex fp16_opt_level
    half_precision_backend bf16_full_eval fp16_full_eval tf32 local_rank xpu_backend save_on_each_node
    evaluation_strategy push_to_hub_model_id push_to_hub_organization mp_parameters torchdynamo ray_scope
    gradient_checkpointing_kwargs include_inputs_for_metrics eval_do_concat_batches use_legacy_prediction_loop
    optim_target_modules batch_eval_metrics eval_on_start split_batches dispatch_batches average_tokens_across_devices
""".split())


# Accelerate 1.16 ClusterConfig (accelerate/commands/config/config_args.py) and the sections `accelerate config` writes
# (accelerate/commands/config/cluster.py)
ACCELERATE = frozenset("""
    compute_environment distributed_type mixed_precision use_cpu debug num_processes machine_rank num_machines gpu_ids
    main_process_ip main_process_port rdzv_backend same_network main_training_function enable_cpu_affinity
    deepspeed_config fsdp_config parallelism_config megatron_lm_config mpirun_config tpu_name tpu_zone
    tpu_use_cluster tpu_use_sudo command_file commands tpu_vm tpu_env dynamo_config downcast_bf16 ipex_config
    fp8_config
""".split())
ACCELERATE_FSDP = frozenset("""
    fsdp_version fsdp_sharding_strategy fsdp_reshard_after_forward fsdp_offload_params fsdp_use_orig_params
    fsdp_backward_prefetch fsdp_backward_prefetch_policy fsdp_forward_prefetch fsdp_activation_checkpointing
    fsdp_auto_wrap_policy fsdp_transformer_layer_cls_to_wrap fsdp_min_num_params fsdp_state_dict_type
    fsdp_cpu_ram_efficient_loading fsdp_sync_module_states fsdp_cpu_offload_pin_memory fsdp_mixed_precision_policy
""".split())
ACCELERATE_DEEPSPEED = frozenset("""
    zero_stage offload_optimizer_device offload_param_device offload_optimizer_nvme_path offload_param_nvme_path
    deepspeed_config_file gradient_accumulation_steps gradient_clipping zero3_init_flag zero3_save_16bit_model
    deepspeed_multinode_launcher deepspeed_hostfile deepspeed_exclusion_filter deepspeed_inclusion_filter
    deepspeed_moe_layer_cls_names
""".split())

# DeepSpeed 0.19 top-level keys (deepspeed/runtime/constants.py, config.py) and ZeRO's (runtime/zero/config.py,
# with their aliases)
DEEPSPEED = frozenset("""
    train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps optimizer scheduler fp16 bf16 bfloat16
    amp zero_optimization gradient_clipping steps_per_print wall_clock_breakdown zero_allow_untested_optimizer
    zero_force_ds_cpu_optimizer prescale_gradients gradient_predivide_factor communication_data_type
    seq_parallel_communication_data_type activation_checkpointing flops_profiler tensorboard wandb csv_monitor comet
    monitor_config dump_state memory_breakdown data_types sparse_gradients checkpoint aio elasticity
    compression_training data_efficiency autotuning torch_autocast compile nebula pipeline sparse_attention
    disable_allgather dataloader_drop_last weight_quantization eigenvalue progressive_layer_drop curriculum_learning
    quantize_training hybrid_engine use_data_before_expert_parallelism graph_harvesting timers
    checkpoint_parallel_write_pipeline
""".split())
ZERO = frozenset("""
    allgather_bucket_size allgather_partitions allgather_sequential compute_grad_norm contiguous_gradients cpu_offload
    cpu_offload_param cpu_offload_use_pin_memory elastic_checkpoint enable_sanity_checks
    gather_16bit_weights_on_model_save ignore_unused_parameters leaf_module legacy_stage1 load_from_fp32_weights
    log_trace_cache_warnings max_live_parameters max_reuse_distance memory_efficient_linear
    model_persistence_threshold module_granularity_threshold offload_optimizer offload_param overlap_comm
    override_module_apply param_persistence_threshold parameter_alignment pipeline_loading_checkpoint
    prefetch_bucket_size reduce_bucket_size reduce_scatter round_robin_gradients save_muon_momentum_buffer_in_memory
    stage stage3_allgather_sequential stage3_gather_16bit_weights_on_model_save
    stage3_gather_fp16_weights_on_model_save stage3_max_live_parameters stage3_max_reuse_distance
    stage3_model_persistence_threshold stage3_module_granularity_threshold stage3_param_persistence_threshold
    stage3_prefetch_bucket_size stage3_use_all_reduce_for_fetch_params sub_group_size use_all_reduce_for_fetch_params
    use_multi_rank_bucket_allreduce zenflow zero_hpz_partition_size zero_quantized_gradients
    zero_quantized_nontrainable_weights zero_quantized_weights mics_shard_size mics_hierarchical_params_gather
    zero_quantized_weights
""".split())
