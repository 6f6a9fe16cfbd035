//! The workspace service, a Spin HTTP component.
