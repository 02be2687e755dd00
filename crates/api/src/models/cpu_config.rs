use serde::{Deserialize, Serialize};

/// Body of `PUT /cpu-config` (`CpuConfig`): Firecracker's custom CPU template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCpuTemplate {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kvm_capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpuid_modifiers: Vec<CpuidLeafModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msr_modifiers: Vec<MsrModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reg_modifiers: Vec<ArmRegisterModifier>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vcpu_features: Vec<VcpuFeatures>,
}

impl CustomCpuTemplate {
    /// A template that modifies nothing.
    pub fn is_empty(&self) -> bool {
        self == &CustomCpuTemplate::default()
    }
}

/// `CpuidLeafModifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidLeafModifier {
    pub leaf: String,
    pub subleaf: String,
    pub flags: i32,
    pub modifiers: Vec<CpuidRegisterModifier>,
}

/// The four CPUID output registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuidRegister {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// `CpuidRegisterModifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidRegisterModifier {
    pub register: CpuidRegister,
    pub bitmap: String,
}

/// `MsrModifier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrModifier {
    pub addr: String,
    pub bitmap: String,
}

/// `ArmRegisterModifier` (aarch64 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmRegisterModifier {
    pub addr: String,
    pub bitmap: String,
}

/// `VcpuFeatures` (aarch64 only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuFeatures {
    pub index: i32,
    pub bitmap: String,
}
